//! Minimal `.netrc` reader: `machine`, `default`, `login`, `password`, `account`, `macdef`.
//!
//! Only what is needed to pick HTTP basic-auth credentials for one host. Passwords are wrapped in
//! [`Secret`] so that they never show up in `Debug` output or logs.

use std::fmt;
use std::path::{Path, PathBuf};

/// A string that must never be printed (token, password).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The value itself, for building a request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Credentials of one `machine` (or `default`) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetrcEntry {
    /// `None` for the `default` entry.
    pub machine: Option<String>,
    /// User name (may be empty).
    pub login: String,
    /// Password, if any.
    pub password: Option<Secret>,
}

/// Parsed `.netrc` file.
#[derive(Clone, Debug, Default)]
pub struct Netrc {
    entries: Vec<NetrcEntry>,
}

impl Netrc {
    /// Parse netrc text. Unknown tokens are skipped; the format is too loose to reject anything.
    pub fn parse(text: &str) -> Netrc {
        let mut entries: Vec<NetrcEntry> = Vec::new();
        let mut lines = text.lines();
        let mut tokens: Vec<String> = Vec::new();
        // Tokenise line by line so that `macdef` bodies (up to an empty line) can be skipped.
        while let Some(line) = lines.next() {
            if line.trim_start().starts_with('#') {
                continue; // comment line
            }
            let mut words = line.split_whitespace();
            while let Some(word) = words.next() {
                if word == "macdef" {
                    let _name = words.next();
                    // Skip the macro body: lines until an empty one.
                    for body in lines.by_ref() {
                        if body.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                tokens.push(word.to_string());
            }
        }
        let mut iter = tokens.into_iter();
        let mut current: Option<NetrcEntry> = None;
        while let Some(tok) = iter.next() {
            match tok.as_str() {
                "machine" => {
                    if let Some(e) = current.take() {
                        entries.push(e);
                    }
                    current = iter.next().map(|m| NetrcEntry {
                        machine: Some(m),
                        login: String::new(),
                        password: None,
                    });
                }
                "default" => {
                    if let Some(e) = current.take() {
                        entries.push(e);
                    }
                    current = Some(NetrcEntry {
                        machine: None,
                        login: String::new(),
                        password: None,
                    });
                }
                "login" => {
                    if let (Some(e), Some(v)) = (current.as_mut(), iter.next()) {
                        e.login = v;
                    }
                }
                "password" => {
                    if let (Some(e), Some(v)) = (current.as_mut(), iter.next()) {
                        e.password = Some(Secret(v));
                    }
                }
                "account" => {
                    let _ = iter.next();
                }
                _ => {}
            }
        }
        if let Some(e) = current.take() {
            entries.push(e);
        }
        Netrc { entries }
    }

    /// Read and parse a netrc file; a missing or unreadable file gives an empty netrc.
    pub fn load(path: &Path) -> Netrc {
        match std::fs::read_to_string(path) {
            Ok(text) => Netrc::parse(&text),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(path = %path.display(), error = %e, "cannot read netrc");
                }
                Netrc::default()
            }
        }
    }

    /// The default location: `$NETRC`, else `~/.netrc`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("NETRC") {
            if !p.is_empty() {
                return Some(PathBuf::from(p));
            }
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".netrc"))
    }

    /// Credentials for `host` (case-insensitive), falling back to the `default` entry.
    pub fn lookup(&self, host: &str) -> Option<&NetrcEntry> {
        self.entries
            .iter()
            .find(|e| {
                e.machine
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(host))
            })
            .or_else(|| self.entries.iter().find(|e| e.machine.is_none()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_machines_and_default() {
        let n = Netrc::parse(
            "# comment\nmachine a.example login alice password s3cret\n# machine b.example login old\n\
             machine b.example\n  login bob\n  password pw2\n  account x\n\
             macdef init\ncd /pub\nls\n\ndefault login anon password guest\n",
        );
        let a = n.lookup("A.example").unwrap();
        assert_eq!(a.login, "alice");
        assert_eq!(a.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(n.lookup("b.example").unwrap().login, "bob");
        assert_eq!(n.lookup("other").unwrap().login, "anon");
    }

    #[test]
    fn no_match_without_default() {
        let n = Netrc::parse("machine a login u password p");
        assert!(n.lookup("b").is_none());
        assert!(Netrc::parse("").lookup("a").is_none());
        assert!(Netrc::parse("machine").lookup("a").is_none());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let n = Netrc::parse("machine a login u password hunter2");
        let dbg = format!("{n:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in "(machine|default|login|password|account|macdef|#|\\PC|[ \n\t]){0,40}") {
            let n = Netrc::parse(&text);
            let _ = n.lookup("h");
        }

        #[test]
        fn finds_the_machine(host in "[a-z0-9]{1,20}\\.example", user in "[a-z]{1,8}", pw in "[!-~]{1,12}") {
            let n = Netrc::parse(&format!("machine other login x password y\nmachine {host} login {user} password {pw}\n"));
            let e = n.lookup(&host).unwrap();
            if host != "other" {
                proptest::prop_assert_eq!(&e.login, &user);
                proptest::prop_assert_eq!(e.password.as_ref().unwrap().expose(), pw.as_str());
            }
        }
    }
}
