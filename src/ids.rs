//! Identifier syntax (SPEC §1.3).

/// An account id: a positive integer below 2^63.
pub type Uin = u64;

/// A product code, interned: a batch sees a handful of products but millions of
/// rows, so each code is stored once for the life of the process and rows carry a
/// thin pointer to it (8 bytes, where a `&str` took 16, in each of millions of
/// lines; compared and hashed by content, copied for free).
pub type Product = &'static String;

/// Every interned product code, by its address (`address_of`).
static PRODUCTS: std::sync::Mutex<rustc_hash::FxHashMap<usize, Product>> = std::sync::Mutex::new(rustc_hash::FxHashMap::with_hasher(rustc_hash::FxBuildHasher));

/// Where an interned product code lives: the same for every use of one code, in
/// this process (a product kept aside between stages of a day is kept so).
pub fn address_of(product: Product) -> usize {
    product as *const String as usize
}

/// The interned product code at `address`, if one lives there.
pub fn product_at(address: usize) -> Option<Product> {
    PRODUCTS.lock().unwrap_or_else(|e| e.into_inner()).get(&address).copied()
}

/// The interned copy of a product code.
pub fn intern_product(code: &str) -> Product {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CODES: OnceLock<Mutex<HashMap<&'static str, Product>>> = OnceLock::new();
    thread_local! {
        // Each thread remembers the codes it has seen, so the lock is taken once per code.
        static SEEN: RefCell<rustc_hash::FxHashMap<&'static str, Product>> = RefCell::default();
    }
    if let Some(known) = SEEN.with(|seen| seen.borrow().get(code).copied()) {
        return known;
    }
    let mut codes = CODES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let interned = match codes.get(code) {
        Some(&known) => known,
        None => {
            let leaked: Product = Box::leak(Box::new(code.to_string()));
            codes.insert(leaked.as_str(), leaked);
            PRODUCTS.lock().unwrap_or_else(|e| e.into_inner()).insert(address_of(leaked), leaked);
            leaked
        }
    };
    SEEN.with(|seen| seen.borrow_mut().insert(interned.as_str(), interned));
    interned
}

/// Parse a UIN written in decimal without leading zeros.
pub fn parse_uin(text: &str) -> Option<Uin> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > 19 || bytes[0] == b'0' || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u64 = text.parse().ok()?;
    is_valid_uin(value).then_some(value)
}

pub fn is_valid_uin(value: u64) -> bool {
    value > 0 && value < (1u64 << 63)
}

/// `record_id`, `order_id`, `resource_id`, `voucher_id`, ...: 1 to 64 characters of
/// `[A-Za-z0-9._:-]`.
pub fn is_valid_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A product code: `[a-z0-9_-]{1,32}`.
pub fn is_valid_product(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 32
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uins() {
        assert_eq!(parse_uin("100000000001"), Some(100000000001));
        assert_eq!(parse_uin("0"), None);
        assert_eq!(parse_uin("0123"), None);
        assert_eq!(parse_uin("9223372036854775808"), None);
        assert_eq!(parse_uin("9223372036854775807"), Some(9223372036854775807));
        assert_eq!(parse_uin("-5"), None);
    }

    #[test]
    fn ids_and_products() {
        assert!(is_valid_id("rec-1:a_b.c"));
        assert!(!is_valid_id("rec 1"));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(is_valid_product("cvm"));
        assert!(!is_valid_product("CVM"));
    }
}
