//! The kinds of failure a library error carries. Library modules say what went wrong
//! (`kind()`); only the command-line edge (`commands::exit`) turns a kind into an exit code.

/// What sort of failure an error is, as far as the caller (and the exit code) cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Anything else: I/O, network, a server's refusal, a tool that failed.
    Failure,
    /// The user asked for something malformed or contradictory; nothing was tried.
    Usage,
    /// Something failed verification: a signature, a checksum, a hostile archive member.
    Verification,
    /// The query or hash matched nothing that could be used.
    NoMatch,
}
