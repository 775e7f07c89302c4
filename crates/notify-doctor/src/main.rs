//! `tsugi-notify-doctor CONFIG`: run on a Tsugi web server, it loads the site's
//! config.php with this server's PHP and checks notifications end to end — the
//! extension, the config, the daemon, the clocks, a real socket, a relayed message and
//! `WebSocket::publish()` — printing one line per check with its verdict and the fix.
//! Exit status: 0 when no check failed, 1 when one did, 2 for a usage error.

mod doctor;
mod net;
mod php;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "tsugi-notify-doctor",
    version,
    about = "Checks a Tsugi site's notifications end to end and says what to fix"
)]
struct Args {
    /// The site's config.php (the one that sets $CFG->websocket_url).
    config: PathBuf,
    /// The PHP to run: the web server's version of the CLI, or a wrapper script.
    #[arg(long, default_value = "php")]
    php: PathBuf,
    /// Load this extension (a path or a name) with -d extension=..., instead of what
    /// PHP's ini files load.
    #[arg(long, value_name = "PATH")]
    extension: Option<String>,
    /// A web server PHP's conf.d to check for the extension, as NAME=DIR (repeatable);
    /// default: the fpm, apache2 and cgi ones beside the CLI's.
    #[arg(long = "sapi-ini-dir", value_name = "NAME=DIR", value_parser = sapi_dir)]
    sapi_dirs: Vec<(String, PathBuf)>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    timeout: u64,
    /// Trust the CAs of this PEM file over TLS instead of the public ones (a site whose
    /// users' machines trust a private CA).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
    /// Run even as root. The config and everything it includes run as PHP code with the
    /// doctor's rights: run it as the web server's user instead (sudo -u www-data ...).
    #[arg(long)]
    allow_root: bool,
}

/// Whether this process runs as root (the owner of /proc/self is the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn sapi_dir(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(dir)))
        }
        _ => Err("expected NAME=DIR, e.g. fpm=/etc/php/8.2/fpm/conf.d".into()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if is_root() && !args.allow_root {
        eprintln!(
            "tsugi-notify-doctor: not as root: the config runs as PHP code with the doctor's rights. Run it as the \
             web server's user (sudo -u www-data tsugi-notify-doctor CONFIG), or give --allow-root."
        );
        return ExitCode::from(2);
    }
    let trust = match &args.ca_file {
        None => net::Trust::default(),
        Some(path) => match net::Trust::from_file(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("tsugi-notify-doctor: --ca-file {e}");
                return ExitCode::from(2);
            }
        },
    };
    // PHP changes into the config's directory before loading it.
    let config = std::fs::canonicalize(&args.config).unwrap_or(args.config);
    let opts = doctor::Options {
        config,
        php: php::Php {
            binary: args.php,
            extension: args.extension,
        },
        sapi_dirs: args.sapi_dirs,
        timeout: Duration::from_secs(args.timeout),
        trust,
    };
    let report = doctor::run(&opts);
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
