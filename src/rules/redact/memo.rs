//! A per-thread memory of the short strings the redactor has judged.
//!
//! Most strings of a log line repeat from line to line (`"user"`, the
//! session id, the cwd, the model, tool names) and object keys nearly always
//! do, yet each costs a scan by the regex set. A direct-mapped table per
//! thread remembers the answer for strings of up to [`MAX_LEN`] bytes, keyed
//! by the whole string: it is exact (a collision evicts the older string, it
//! never answers for another one). It belongs to one redactor at a time and
//! is emptied when another one (a reloaded rule pack) asks.

use rustc_hash::FxBuildHasher;
use std::cell::RefCell;
use std::hash::BuildHasher;

/// Longest string remembered: ids, paths and names; prose is rarely repeated.
pub(super) const MAX_LEN: usize = 62;
/// Entries per table (64 bytes each): 64 KiB per thread and table.
const SLOTS: usize = 1024;

/// What is remembered about a string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    /// Object keys: 0 = no `key` regex matches, i + 1 = pattern i's does.
    Keys = 0,
    /// Strings no pattern matches (the answer is always 0).
    Clean = 1,
}

#[derive(Clone, Copy)]
struct Slot {
    /// 0 = empty (the empty string is never remembered).
    len: u8,
    answer: u8,
    bytes: [u8; MAX_LEN],
}

const EMPTY: Slot = Slot {
    len: 0,
    answer: 0,
    bytes: [0; MAX_LEN],
};

/// One thread's tables, lent to one redaction walk at a time by [`with`].
pub(super) struct Memo {
    owner: u64,
    /// False when the thread's memory was already lent (a nested walk): that
    /// walk then remembers nothing rather than sharing it.
    enabled: bool,
    tables: [Vec<Slot>; 2],
}

impl Memo {
    const fn new(enabled: bool) -> Memo {
        Memo {
            owner: 0,
            enabled,
            tables: [Vec::new(), Vec::new()],
        }
    }

    /// The answer remembered for `s` in `table`, if any.
    pub(super) fn recall(&self, table: Table, s: &str) -> Option<u8> {
        if s.is_empty() || s.len() > MAX_LEN {
            return None;
        }
        let slot = self.tables[table as usize].get(slot_of(s))?;
        (usize::from(slot.len) == s.len() && &slot.bytes[..s.len()] == s.as_bytes())
            .then_some(slot.answer)
    }

    /// Remember `answer` for `s` (ignored when `s` is empty or too long).
    pub(super) fn remember(&mut self, table: Table, s: &str, answer: u8) {
        if !self.enabled || s.is_empty() || s.len() > MAX_LEN {
            return;
        }
        let t = &mut self.tables[table as usize];
        if t.is_empty() {
            t.resize(SLOTS, EMPTY);
        }
        let slot = &mut t[slot_of(s)];
        slot.len = s.len() as u8;
        slot.answer = answer;
        slot.bytes[..s.len()].copy_from_slice(s.as_bytes());
    }
}

thread_local! {
    static MEMO: RefCell<Memo> = const { RefCell::new(Memo::new(true)) };
}

fn slot_of(s: &str) -> usize {
    (FxBuildHasher.hash_one(s.as_bytes()) >> 54) as usize % SLOTS
}

/// Run `f` with this thread's memory for redactor `owner` (emptied first if
/// another redactor used it). One thread-local access per document instead
/// of one per string: the lookups were 3 % of the router.
pub(super) fn with<R>(owner: u64, f: impl FnOnce(&mut Memo) -> R) -> R {
    MEMO.with(|cell| match cell.try_borrow_mut() {
        Ok(mut m) => {
            if m.owner != owner {
                m.owner = owner;
                m.tables.iter_mut().for_each(Vec::clear);
            }
            f(&mut m)
        }
        Err(_) => f(&mut Memo::new(false)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recall(owner: u64, table: Table, s: &str) -> Option<u8> {
        with(owner, |m| m.recall(table, s))
    }

    fn remember(owner: u64, table: Table, s: &str, answer: u8) {
        with(owner, |m| m.remember(table, s, answer))
    }

    #[test]
    fn answers_only_for_the_same_string_and_owner() {
        remember(7, Table::Keys, "password", 3);
        assert_eq!(recall(7, Table::Keys, "password"), Some(3));
        assert_eq!(
            recall(7, Table::Clean, "password"),
            None,
            "tables are apart"
        );
        assert_eq!(recall(7, Table::Keys, "passwore"), None);
        assert_eq!(recall(8, Table::Keys, "password"), None, "another redactor");
        // another owner emptied the tables
        assert_eq!(recall(7, Table::Keys, "password"), None);
        let long = "a".repeat(MAX_LEN + 1);
        remember(8, Table::Clean, &long, 0);
        assert_eq!(
            recall(8, Table::Clean, &long),
            None,
            "long strings are not kept"
        );
        remember(8, Table::Clean, "", 0);
        assert_eq!(recall(8, Table::Clean, ""), None);
    }

    #[test]
    fn a_collision_evicts_and_never_answers_for_the_other_string() {
        // find two strings in one slot
        let first = "k0".to_string();
        let other = (1..100_000)
            .map(|i| format!("k{i}"))
            .find(|s| slot_of(s) == slot_of(&first))
            .expect("a colliding key");
        remember(9, Table::Keys, &first, 1);
        assert_eq!(recall(9, Table::Keys, &other), None);
        remember(9, Table::Keys, &other, 2);
        assert_eq!(recall(9, Table::Keys, &first), None);
        assert_eq!(recall(9, Table::Keys, &other), Some(2));
    }

    #[test]
    fn a_nested_walk_neither_panics_nor_shares_the_memory() {
        with(11, |outer| {
            outer.remember(Table::Clean, "outer", 0);
            with(11, |inner| {
                inner.remember(Table::Clean, "inner", 0);
                assert_eq!(inner.recall(Table::Clean, "inner"), None);
                assert_eq!(inner.recall(Table::Clean, "outer"), None);
            });
        });
        assert_eq!(recall(11, Table::Clean, "outer"), Some(0));
        assert_eq!(recall(11, Table::Clean, "inner"), None);
    }
}
