//! The extension: loaded for this PHP's CLI (or loadable), the class the native one,
//! enabled in the web server's PHP (FPM, Apache, CGI), and no preload script that
//! declares the class a second time.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Options, EXT};
use crate::php::{Probe, ProbeError};
use crate::report::Report;

/// Runs the probe (loading the extension by name when the CLI does not) and reports on
/// the extension and the class. `None`: nothing further can be checked.
pub(super) fn check(r: &mut Report, opts: &Options, room: &str) -> Option<Probe> {
    let mut probe = match opts.php.probe(&opts.config, &["info", room], None) {
        Ok(p) => p,
        Err(e) => return probe_failed(r, opts, e),
    };
    if probe.config_missing {
        r.fail(
            "config",
            format!("{} is not a file", opts.config.display()),
            "give the path of the site's config.php (the one that sets $CFG->websocket_url)",
        );
        return None;
    }
    if let Some(path) = opts.php.extension.as_deref() {
        if probe.extension_loaded {
            r.ok(
                "extension.cli",
                format!("{EXT} {} loaded (--extension)", version(&probe)),
            );
        } else {
            r.fail(
                "extension.cli",
                format!("--extension {path} cannot be loaded by this PHP"),
                "give the path of a tsugi_websocket.so built for this PHP version",
            );
        }
    } else if probe.extension_loaded {
        r.note(
            "extension.cli",
            format!("{EXT} {} is loaded for the PHP CLI too", version(&probe)),
            Some(format!(
                "Tsugi's own PHPUnit suite and scripts that require tsugi-php's WebSocket.php stop with \
                 'Cannot declare class' under it: `phpdismod -s cli {EXT}` keeps it for the web server only"
            )),
        );
    } else {
        // Off for the CLI, as recommended: check with it loaded, as the web server runs.
        match opts.php.probe(&opts.config, &["info", room], Some(EXT)) {
            Ok(mut p) if p.extension_loaded => {
                r.ok(
                    "extension.cli",
                    format!(
                        "{EXT} {} is installed (off for the PHP CLI; checked with -d extension={EXT})",
                        version(&p)
                    ),
                );
                p.load = Some(EXT);
                probe = p;
            }
            Ok(_) | Err(ProbeError::NoReport) => r.fail(
                "extension.cli",
                format!(
                    "{EXT} is not installed for PHP {}: `php -d extension={EXT}` cannot load it",
                    probe.php_version.as_deref().unwrap_or("?")
                ),
                format!(
                    "install the package for this PHP (tsugi-notify-phpX.Y) or `make install-ext`, then \
                     `phpenmod {EXT}` and reload the web server"
                ),
            ),
            Err(e) => return probe_failed(r, opts, e),
        }
    }
    if let Some(fatal) = &probe.fatal {
        let declared_twice = fatal.starts_with("Cannot declare class");
        r.fail(
            "config",
            format!("loading {} stopped: {fatal}", opts.config.display()),
            if declared_twice {
                format!(
                    "the extension declares Tsugi\\Core\\WebSocket itself: remove the require of tsugi-php's \
                     WebSocket.php (Composer's autoloader is fine), or keep the extension off for this PHP \
                     (`phpdismod -s cli {EXT}`)"
                )
            } else {
                "run `php CONFIG` to see the error, and fix the config".to_owned()
            },
        );
        return None;
    }
    match &probe.class {
        None => {
            r.fail(
                "extension.class",
                "Tsugi\\Core\\WebSocket is not defined after loading the config",
                format!("load the extension (`phpenmod {EXT}`) or install tsugi-php (composer install)"),
            );
            return None;
        }
        Some(c) if c.internal => r.ok(
            "extension.class",
            "Tsugi\\Core\\WebSocket is the extension's native class",
        ),
        Some(c) => r.warn(
            "extension.class",
            format!(
                "Tsugi\\Core\\WebSocket is tsugi-php's PHP class ({}): pages mint legacy tokens, and publish() is missing",
                c.file.as_deref().unwrap_or("?")
            ),
            format!("load the extension: `phpenmod {EXT}` and reload the web server"),
        ),
    }
    Some(probe)
}

fn version(p: &Probe) -> String {
    p.extension_version.clone().unwrap_or_else(|| "?".into())
}

fn probe_failed(r: &mut Report, opts: &Options, e: ProbeError) -> Option<Probe> {
    // PHP's own output is not shown: an error message may quote the config's lines.
    let (what, fix) = match e {
        ProbeError::Spawn(why) => {
            r.fail(
                "php",
                format!("cannot run PHP: {why}"),
                "install PHP's CLI, or give the web server's PHP with --php PATH",
            );
            return None;
        }
        ProbeError::NoReport => (
            format!("PHP gave no report for {}", opts.config.display()),
            "run `php CONFIG` to see the error, and fix the config",
        ),
        ProbeError::TimedOut => (
            format!("loading {} took longer than 30 s (PHP was stopped)", opts.config.display()),
            "the config waits on something (a database, a network file system): run `php CONFIG` to see where",
        ),
    };
    r.fail("config", what, fix);
    None
}

/// The extension in the web server's PHP (FPM, Apache, CGI), and preload scripts.
pub(super) fn web_sapis(r: &mut Report, opts: &Options, probe: &Probe) {
    let dirs: Vec<(String, PathBuf)> = if opts.sapi_dirs.is_empty() {
        // /etc/php/8.2/cli/conf.d -> /etc/php/8.2/{fpm,apache2,cgi}/conf.d
        probe
            .conf_dir()
            .and_then(|d| d.parent().and_then(Path::parent).map(Path::to_path_buf))
            .map(|php| {
                ["fpm", "apache2", "cgi"]
                    .iter()
                    .map(|s| (s.to_string(), php.join(s).join("conf.d")))
                    .filter(|(_, d)| d.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        opts.sapi_dirs.clone()
    };
    let mut preloads: Vec<String> = Vec::new();
    if !probe.preload.is_empty() {
        preloads.push(probe.preload.clone());
    }
    if dirs.is_empty() {
        r.skip(
            "extension.web",
            "no FPM, Apache or CGI PHP config beside the CLI's: check phpinfo() on the web server \
             (or give --sapi-ini-dir NAME=DIR)",
        );
    }
    for (name, dir) in &dirs {
        let scan = scan_ini(dir);
        preloads.extend(scan.preload);
        match scan.extension {
            Some(file) => r.ok(
                "extension.web",
                format!("{name}: {EXT} enabled in {}", file.display()),
            ),
            None => r.warn(
                "extension.web",
                format!(
                    "{name}: no extension={EXT} in {}: its pages use tsugi-php's PHP class",
                    dir.display()
                ),
                format!("`phpenmod -s {name} {EXT}` and reload {name}"),
            ),
        }
    }
    let bad: Vec<&str> = preloads
        .iter()
        .filter(|p| read_small(Path::new(p)).contains("WebSocket.php"))
        .map(String::as_str)
        .collect();
    if bad.is_empty() {
        r.ok(
            "extension.preload",
            "no opcache.preload script loads tsugi-php's WebSocket.php",
        );
    } else {
        r.warn(
            "extension.preload",
            format!(
                "opcache.preload script {} loads tsugi-php's WebSocket.php: PHP stops with 'Cannot declare class' \
                 while the extension is loaded",
                bad.join(", ")
            ),
            "drop WebSocket.php from the preload list (the extension defines the class)",
        );
    }
}

/// A regular file's first MiB as text; anything else (a device, a FIFO) reads as empty.
fn read_small(path: &Path) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(1 << 20).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

struct Scan {
    extension: Option<PathBuf>,
    preload: Vec<String>,
}

/// The `extension=tsugi_websocket` line and `opcache.preload` settings in a conf.d.
fn scan_ini(dir: &Path) -> Scan {
    let mut scan = Scan {
        extension: None,
        preload: Vec::new(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "ini"))
    {
        for line in read_small(&file).lines() {
            let line = line.trim();
            if line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches(['"', '\'']);
            match key.trim() {
                "extension"
                    if Path::new(value)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| s == EXT || s == format!("lib{EXT}")) =>
                {
                    scan.extension.get_or_insert(file.clone());
                }
                "opcache.preload" if !value.is_empty() => scan.preload.push(value.to_owned()),
                _ => {}
            }
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_lines_are_read_as_php_reads_them() {
        let dir = std::env::temp_dir().join(format!("doctor-ini-{}", super::super::random_hex()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("10-opcache.ini"),
            "zend_extension=opcache.so\nopcache.preload=/srv/preload.php\n",
        )
        .unwrap();
        std::fs::write(dir.join("20-other.ini"), ";extension=tsugi_websocket\n").unwrap();
        let scan = scan_ini(&dir);
        assert!(
            scan.extension.is_none(),
            "a commented line does not load it"
        );
        assert_eq!(scan.preload, ["/srv/preload.php"]);
        std::fs::write(
            dir.join("30-tsugi_websocket.ini"),
            "extension = \"/usr/lib/php/20220829/tsugi_websocket.so\"\n",
        )
        .unwrap();
        assert_eq!(
            scan_ini(&dir).extension,
            Some(dir.join("30-tsugi_websocket.ini"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_regular_files_are_read() {
        assert_eq!(read_small(Path::new("/dev/zero")), "");
        assert_eq!(read_small(Path::new("/nonexistent")), "");
    }
}
