//! The `tsugi_websocket` PHP extension (placeholder module; the class comes next).
#![allow(missing_debug_implementations)]

use ext_php_rs::prelude::*;

#[php_module]
pub fn module(module: ModuleBuilder) -> ModuleBuilder {
    module.name("tsugi_websocket")
}
