//! Who is here by name. A name is found as the room compares nicknames
//! ([`protocol::nick_key`]: any case, lookalike letters), so that `/msg
//! B0B` reaches `bob` exactly when `B0B` could not have joined beside him;
//! and `/list` reads the first names in alphabetical order (without regard
//! to case) without sorting or copying everybody's.

use crate::protocol;
use std::collections::{BTreeSet, HashMap};

/// Names and what the room keeps for each.
#[derive(Debug)]
pub struct Directory<V> {
    /// By [`protocol::nick_key`].
    by_key: HashMap<String, Named<V>>,
    /// `(list order, key)`: the name in lower case first, so that names
    /// read in alphabetical order; the key keeps each entry unique.
    order: BTreeSet<(String, String)>,
}

/// A name as its owner spells it, and what the room keeps with it.
#[derive(Debug)]
pub struct Named<V> {
    pub nick: String,
    pub value: V,
}

impl<V> Default for Directory<V> {
    fn default() -> Self {
        Directory {
            by_key: HashMap::new(),
            order: BTreeSet::new(),
        }
    }
}

fn list_order(nick: &str) -> String {
    nick.to_lowercase()
}

impl<V> Directory<V> {
    /// The entry of whoever holds `name`, in any case or lookalike
    /// spelling.
    pub fn find(&self, name: &str) -> Option<&Named<V>> {
        self.by_key.get(&protocol::nick_key(name))
    }

    /// The entry under `key` (a [`protocol::nick_key`]).
    pub fn get(&self, key: &str) -> Option<&Named<V>> {
        self.by_key.get(key)
    }

    /// Whether someone holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// Puts `nick` under `key`, replacing whatever was there.
    pub fn insert(&mut self, key: String, nick: String, value: V) {
        self.remove(&key);
        self.order.insert((list_order(&nick), key.clone()));
        self.by_key.insert(key, Named { nick, value });
    }

    /// Takes out the entry under `key`.
    pub fn remove(&mut self, key: &str) -> Option<Named<V>> {
        let named = self.by_key.remove(key)?;
        self.order
            .remove(&(list_order(&named.nick), key.to_owned()));
        Some(named)
    }

    /// How many names there are.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// The first `max` names in alphabetical order, as their owners spell
    /// them.
    pub fn first(&self, max: usize) -> Vec<String> {
        self.order
            .iter()
            .take(max)
            .filter_map(|(_, key)| self.by_key.get(key).map(|named| named.nick.clone()))
            .collect()
    }

    /// Every entry, with its key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Named<V>)> {
        self.by_key.iter()
    }

    /// Forgets everybody.
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(directory: &mut Directory<()>, nick: &str) {
        directory.insert(protocol::nick_key(nick), nick.to_owned(), ());
    }

    #[test]
    fn names_are_found_in_any_spelling_and_listed_alphabetically() {
        let mut directory = Directory::default();
        for nick in ["kate", "Alice", "ivan", "bob"] {
            add(&mut directory, nick);
        }
        assert_eq!(directory.find("B0B").map(|n| n.nick.as_str()), Some("bob"));
        assert_eq!(
            directory.find("lvan").map(|n| n.nick.as_str()),
            Some("ivan")
        );
        assert!(directory.find("carol").is_none());
        assert_eq!(directory.first(10), ["Alice", "bob", "ivan", "kate"]);
        assert_eq!(directory.first(2), ["Alice", "bob"]);
        assert!(directory.remove(&protocol::nick_key("BOB")).is_some());
        assert_eq!(directory.len(), 3);
        assert_eq!(directory.first(10), ["Alice", "ivan", "kate"]);
        // A new spelling under the same key replaces the old one whole.
        add(&mut directory, "KATE");
        assert_eq!(directory.first(10), ["Alice", "ivan", "KATE"]);
        assert_eq!(directory.len(), 3);
    }
}
