//! The error type plugin code returns.

use std::fmt;

use abi_stable::std_types::RString;

use crate::ffi::FfiError;

/// An error from plugin code: a message for the user, plus whether it came from a caught panic.
///
/// Any `std::error::Error` converts into it with `?`, so `tch`, I/O and parse errors need no
/// wrapping. Like `anyhow::Error`, it deliberately does not implement `std::error::Error` itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    panicked: bool,
}

/// The result type of plugin code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Creates an error with the given message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self { message: message.to_string(), panicked: false }
    }

    /// Creates the error that reports a caught panic.
    pub fn panic(message: impl fmt::Display) -> Self {
        Self { message: message.to_string(), panicked: true }
    }

    /// The message, without any prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when this error reports a caught panic.
    pub fn is_panic(&self) -> bool {
        self.panicked
    }

    /// Prepends context to the message, as in `reading file.csv: line 3: ...`.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self { message: format!("{context}: {}", self.message), panicked: self.panicked }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        Self::msg(error)
    }
}

impl From<Error> for FfiError {
    fn from(error: Error) -> Self {
        FfiError { message: RString::from(error.message), panicked: error.panicked }
    }
}

impl From<FfiError> for Error {
    fn from(error: FfiError) -> Self {
        Error { message: error.message.into_string(), panicked: error.panicked }
    }
}

/// Returns early with an [`Error`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(format!($($arg)*)))
    };
}

/// Returns early with an [`Error`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::bail!($($arg)*);
        }
    };
}
