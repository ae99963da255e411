//! Errors of the engine: every one names the JSON path of the offending field and the reason.

use std::fmt;

/// One problem found in an evidence file (or another input document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `equipment[0].states[2].to`; empty for the whole document.
    pub path: String,
    /// What is wrong, in words a plant engineer or auditor understands.
    pub reason: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// All problems found in one document. Parsing stops at the first syntax error; semantic
/// validation reports every problem it finds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    pub errors: Vec<FieldError>,
}

impl InputError {
    pub fn one(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError::new(path, reason)],
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects field errors during validation.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError::new(path, reason));
    }

    pub(crate) fn into_result(self) -> Result<(), InputError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InputError { errors: self.0 })
        }
    }
}
