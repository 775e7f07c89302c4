//! Reading PHP values without side effects PHP would not have: the global `$CFG`, and
//! properties of config and launch objects (declared, dynamic, readonly or `__get`).

use ext_php_rs::ffi;
use ext_php_rs::types::{PropertyQuery, ZendObject, Zval};
use ext_php_rs::zend::ExecutorGlobals;

/// The global `$CFG`, when it is an object. A copy: the globals guard is released
/// before any property is read (reading may run PHP code through `__isset`/`__get`).
pub fn global_cfg() -> Option<Zval> {
    let value = {
        let globals = ExecutorGlobals::get();
        let found = globals.symbol_table.get("CFG")?;
        // In the main script `$CFG` is an INDIRECT slot; after `global $CFG;` it is
        // INDIRECT -> REFERENCE -> value.
        found.dereference().dereference().shallow_clone()
    };
    value.is_object().then_some(value)
}

/// `$obj->$name` if `isset($obj->$name)`, dereferenced and copied out; `None` otherwise,
/// or when `$value` is not an object, or when reading raised an exception.
pub fn property(value: &Zval, name: &str) -> Option<Zval> {
    let obj = value.object()?;
    // Never run more PHP code (`__isset`, `__get`) while an exception is pending.
    if ExecutorGlobals::has_exception() {
        return None;
    }
    // SAFETY: `ce` of a live object is a valid class entry.
    let magic = unsafe { obj.ce.as_ref() }.is_none_or(|ce| !ce.__get.is_null());
    // A class with `__get` answers isset() through `__isset`, which a plain read would
    // skip: ask it first, as PHP's isset() does. Other objects are read directly.
    if magic
        && (!obj
            .has_property(name, PropertyQuery::Isset)
            .unwrap_or(false)
            || ExecutorGlobals::has_exception())
    {
        return None;
    }
    read_silently(obj, name).filter(|v| !v.is_null())
}

/// Reads a property the way `isset()`/`??` do (`BP_VAR_IS`): no warning for a missing
/// or uninitialized property, no write intent (readonly properties read fine).
fn read_silently(obj: &ZendObject, name: &str) -> Option<Zval> {
    let mut rv = Zval::new();
    // SAFETY: `obj` is a live object borrowed for the call; `name` outlives it and its
    // length is passed explicitly; `rv` is a valid zval the engine may write a
    // temporary into (released when `rv` drops). `silent` reads in BP_VAR_IS mode. The
    // engine takes the object pointer as mutable but does not free it.
    let found = unsafe {
        ffi::zend_read_property(
            obj.ce,
            std::ptr::from_ref(obj).cast_mut(),
            name.as_ptr().cast(),
            name.len(),
            true,
            &raw mut rv,
        )
    };
    if found.is_null() || ExecutorGlobals::has_exception() {
        return None;
    }
    // SAFETY: a non-null result points at the property slot, at `rv`, or at the
    // engine's uninitialized zval, all alive here.
    let copy = unsafe { &*found }.dereference().shallow_clone();
    Some(copy)
}

/// A non-empty string.
pub fn non_empty_str(value: &Zval) -> Option<&str> {
    value.str().filter(|s| !s.is_empty())
}

/// An id as Tsugi writes it into a plaintext: an int in decimal, a string as it is.
/// `Err` for any other type.
pub fn id_string(value: &Zval) -> Result<String, ()> {
    if let Some(n) = value.long() {
        Ok(n.to_string())
    } else if let Some(s) = value.str() {
        Ok(s.to_owned())
    } else {
        Err(())
    }
}

/// An int, or a string of decimal digits (as values set from the environment are).
pub fn int_like(value: &Zval) -> Option<i64> {
    value.long().or_else(|| {
        value
            .str()
            .filter(|s| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
    })
}
