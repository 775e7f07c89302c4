//! The doctor's findings: one line per check with a verdict, what was found and the fix,
//! as stable text or JSON.

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As it should be.
    Ok,
    /// Worth knowing; nothing to change.
    Note,
    /// Works now, but something is off.
    Warn,
    /// Notifications do not work (or not everywhere) until this is fixed.
    Fail,
    /// Not checked, for the reason given.
    Skip,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Note => "note",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
        }
    }
}

/// `text` without control characters (a terminal's escape sequences, line breaks),
/// shortened to 400 characters.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_control() || is_invisible(c) {
                ' '
            } else {
                c
            }
        })
        .take(400)
        .collect();
    if text.chars().count() > 400 {
        out.push_str("...");
    }
    out
}

/// Zero-width and bidirectional-override characters: they can make a terminal show
/// a line other than the one printed.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// One finding.
#[derive(Debug, Serialize)]
pub struct Check {
    /// A stable name, such as `socket.v1`.
    pub id: &'static str,
    pub verdict: Verdict,
    /// What was found.
    pub what: String,
    /// What to change, for `warn` and `fail` (and some notes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every finding, in the order checked.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Records a finding. What came from outside (a config value, a server's answer) is
    /// kept to one line of printable text, at most 400 characters.
    pub fn add(
        &mut self,
        id: &'static str,
        verdict: Verdict,
        what: impl Into<String>,
        fix: Option<String>,
    ) {
        self.checks.push(Check {
            id,
            verdict,
            what: printable(&what.into()),
            fix: fix.as_deref().map(printable),
        });
    }

    pub fn ok(&mut self, id: &'static str, what: impl Into<String>) {
        self.add(id, Verdict::Ok, what, None);
    }

    pub fn note(&mut self, id: &'static str, what: impl Into<String>, fix: Option<String>) {
        self.add(id, Verdict::Note, what, fix);
    }

    pub fn warn(&mut self, id: &'static str, what: impl Into<String>, fix: impl Into<String>) {
        self.add(id, Verdict::Warn, what, Some(fix.into()));
    }

    pub fn fail(&mut self, id: &'static str, what: impl Into<String>, fix: impl Into<String>) {
        self.add(id, Verdict::Fail, what, Some(fix.into()));
    }

    pub fn skip(&mut self, id: &'static str, why: impl Into<String>) {
        self.add(id, Verdict::Skip, why, None);
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.verdict == Verdict::Fail)
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }

    /// `VERDICT ID: what`, then `     fix: ...`, and a closing count.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!("{:<4} {}: {}\n", c.verdict.word(), c.id, c.what));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("     fix: {fix}\n"));
            }
        }
        out.push_str(&format!(
            "tsugi-notify-doctor: {} ok, {} note, {} warn, {} fail, {} skip\n",
            self.count(Verdict::Ok),
            self.count(Verdict::Note),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail),
            self.count(Verdict::Skip),
        ));
        out
    }

    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            ok: bool,
            checks: &'a [Check],
        }
        serde_json::to_string_pretty(&Out {
            ok: !self.failed(),
            checks: &self.checks,
        })
        .unwrap_or_else(|_| "{\"ok\": false}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_server_says_is_printed_as_one_plain_line() {
        let mut r = Report::default();
        r.fail(
            "x",
            format!("refused (403 {})", "\u{1b}[2Jok\nfail y: forged"),
            "fix",
        );
        r.ok("long", "a".repeat(1000));
        let text = r.text();
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}'));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("fail ")).count(),
            1,
            "{text}"
        );
        assert!(text.contains(&format!("{}...", "a".repeat(400))));
    }
}
