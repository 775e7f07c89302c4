//! Running PHP on the site's config: the probe script (probe.php) goes in on standard
//! input, one marked JSON line comes out.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

const PROBE: &str = include_str!("probe.php");
const MARK: &str = "@@tsugi-notify-doctor@@ ";
/// How long the config may take to load (a database it connects to may be down).
const PHP_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of PHP's output kept.
const OUTPUT_LIMIT: u64 = 1 << 20;

/// How to run PHP: the binary (or a wrapper script) and extra `-d` settings.
#[derive(Debug, Clone)]
pub struct Php {
    pub binary: PathBuf,
    pub extension: Option<String>,
}

/// The site's config as the probe found it (absent keys are `None`).
#[derive(Debug, Default, Deserialize)]
pub struct Cfg {
    #[serde(default)]
    pub present: bool,
    pub wwwroot: Option<serde_json::Value>,
    pub websocket_url: Option<serde_json::Value>,
    pub websocket_publish_url: Option<serde_json::Value>,
    pub websocket_token_format: Option<serde_json::Value>,
    #[serde(default)]
    pub secret_set: bool,
}

/// Which class `Tsugi\Core\WebSocket` is.
#[derive(Debug, Deserialize)]
pub struct Class {
    pub internal: bool,
    pub file: Option<String>,
}

/// What one probe run reported.
#[derive(Debug, Default, Deserialize)]
pub struct Probe {
    pub fatal: Option<String>,
    pub php_version: Option<String>,
    pub scan_dir: Option<String>,
    #[serde(default)]
    pub scanned: Vec<String>,
    #[serde(default)]
    pub preload: String,
    #[serde(default)]
    pub extension_loaded: bool,
    pub extension_version: Option<String>,
    #[serde(default)]
    pub config_missing: bool,
    #[serde(default)]
    pub cfg: Cfg,
    pub time: Option<i64>,
    pub class: Option<Class>,
    #[serde(default)]
    pub enabled: bool,
    pub host: Option<serde_json::Value>,
    pub port: Option<serde_json::Value>,
    pub proxyport: Option<serde_json::Value>,
    pub token: Option<serde_json::Value>,
    pub token_iat: Option<i64>,
    pub legacy_token: Option<serde_json::Value>,
    pub published: Option<bool>,
    /// The `-d extension=` this report was made with (besides `--extension`).
    #[serde(skip)]
    pub load: Option<&'static str>,
}

impl Probe {
    /// A token the probe minted, when it is a string.
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().and_then(|v| v.as_str())
    }

    pub fn legacy_token(&self) -> Option<&str> {
        self.legacy_token.as_ref().and_then(|v| v.as_str())
    }

    /// The conf.d directory this PHP scans (where its scanned files are, else the
    /// compiled-in one).
    pub fn conf_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = self
            .scanned
            .first()
            .and_then(|f| Path::new(f).parent().map(Path::to_path_buf))
        {
            return Some(dir);
        }
        self.scan_dir
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d.split(':').next().unwrap_or(d)))
    }
}

/// Why the probe gave no report.
#[derive(Debug)]
pub enum ProbeError {
    /// PHP could not be started.
    Spawn(String),
    /// PHP ran but printed no report. Its output is not kept: an error message may
    /// quote the config's lines, the secret's among them.
    NoReport,
    /// PHP was still running after [`PHP_TIMEOUT`].
    TimedOut,
}

/// Reads a pipe to its end, keeping at most [`OUTPUT_LIMIT`] bytes.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = (&mut pipe).take(OUTPUT_LIMIT).read_to_end(&mut kept);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        }
        kept
    })
}

impl Php {
    fn command(&self, load: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.binary);
        if let Some(ext) = load.or(self.extension.as_deref()) {
            cmd.arg("-d").arg(format!("extension={ext}"));
        }
        cmd
    }

    /// Runs the probe with `args` after the config path; `load` names an extension to
    /// load with `-d extension=` (else `--extension`'s, if any).
    pub fn probe(
        &self,
        config: &Path,
        args: &[&str],
        load: Option<&str>,
    ) -> Result<Probe, ProbeError> {
        let mut cmd = self.command(load);
        cmd.arg("--")
            .arg(config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| ProbeError::Spawn(format!("{}: {e}", self.binary.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A PHP that exits at once closes the pipe; its output says why.
            let _ = stdin.write_all(PROBE.as_bytes());
        }
        let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
        let deadline = Instant::now() + PHP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // A wrapper's child may still hold the pipes: their readers are
                    // left behind rather than waited for.
                    return Err(ProbeError::TimedOut);
                }
            }
        }
        let out = stdout.join().unwrap_or_default();
        let _ = stderr.join();
        let stdout = String::from_utf8_lossy(&out);
        let report = stdout
            .lines()
            .filter_map(|l| l.strip_prefix(MARK))
            .next_back()
            .and_then(|json| serde_json::from_str::<Probe>(json).ok());
        report.ok_or(ProbeError::NoReport)
    }
}
