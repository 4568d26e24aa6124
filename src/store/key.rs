//! How a quota key becomes a name in a shared store.

use std::sync::Arc;

/// A quota key that a shared store can name: the same key gives the same bytes in every
/// process of the fleet (a `Hash` implementation does not promise that). The store hashes the
/// bytes (SHA-1) into a bounded name, so keys taken from untrusted input cannot grow or shape
/// the store's key space.
pub trait StoreKey {
    /// Appends the key's stable identity to `out`.
    fn write_name(&self, out: &mut Vec<u8>);
}

impl StoreKey for str {
    fn write_name(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl StoreKey for String {
    fn write_name(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl StoreKey for Arc<str> {
    fn write_name(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl<T: StoreKey + ?Sized> StoreKey for &T {
    fn write_name(&self, out: &mut Vec<u8>) {
        (**self).write_name(out);
    }
}

macro_rules! int_keys {
    ($($t:ty),*) => {$(
        impl StoreKey for $t {
            fn write_name(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
int_keys!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

#[cfg(feature = "bedrock")]
impl StoreKey for crate::bedrock::BedrockKey {
    fn write_name(&self, out: &mut Vec<u8>) {
        // A NUL cannot appear in a region, so region and model never run into each other.
        out.extend_from_slice(self.region().as_bytes());
        out.push(0);
        out.extend_from_slice(self.model().as_bytes());
    }
}
