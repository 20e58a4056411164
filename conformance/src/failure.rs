//! The one error type of the suite: which case failed and why.

use std::fmt;

/// A conformance failure: the case and a message naming the property that broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The case that failed.
    pub case: String,
    /// What was expected and what the backend did.
    pub message: String,
}

impl Failure {
    /// A failure of `case`.
    pub fn new(case: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            case: case.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance case `{}` failed: {}",
            self.case, self.message
        )
    }
}

impl std::error::Error for Failure {}

/// The result of a check inside a case: the message of the first broken property.
pub(crate) type Check<T = ()> = Result<T, String>;

/// Fails the current check with a formatted message unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}
pub(crate) use ensure;

/// Fails the current check unless both sides are equal, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(format!(
                "{}\n  expected: {:?}\n    actual: {:?}",
                format!($($msg)+),
                right,
                left
            ));
        }
    }};
}
pub(crate) use ensure_eq;
