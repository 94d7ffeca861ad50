//! Secret bytes in memory: zeroed when dropped, never printed.

use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Takes a `String` from the SDK without leaving a copy behind in it.
    pub fn from_string(value: String) -> Self {
        Self::new(value.into_bytes())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes(<redacted, {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::SecretBytes;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretBytes::from_string("hunter2-value".into());
        let printed = format!("{s:?} {:#?}", s);
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("13 bytes"));
    }
}
