//! A small cache of one-cluster metadata tables (L2 tables, refcount blocks)
//! keyed by their host offset, with least-recently-used eviction. It only
//! holds bytes and flags; the caller decides how a dirty victim is written,
//! because the write order between table kinds is what keeps the image
//! consistent after a crash.

use std::collections::HashMap;

pub struct Table {
    pub key: u64,
    pub data: Box<[u8]>,
    pub dirty: bool,
    /// L2 tables only: not yet referenced by the L1 table on disk, so it may
    /// be written at any time without ordering constraints.
    pub fresh: bool,
    tick: u64,
}

pub struct TableCache {
    slots: Vec<Table>,
    index: HashMap<u64, usize>,
    cap: usize,
    tick: u64,
}

impl TableCache {
    pub fn new(cap: usize) -> Self {
        TableCache {
            slots: Vec::new(),
            index: HashMap::new(),
            cap: cap.max(2),
            tick: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.cap
    }

    /// Slot of `key`, marking it recently used.
    pub fn find(&mut self, key: u64) -> Option<usize> {
        let i = *self.index.get(&key)?;
        self.tick += 1;
        self.slots[i].tick = self.tick;
        Some(i)
    }

    pub fn get(&self, i: usize) -> &Table {
        &self.slots[i]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut Table {
        &mut self.slots[i]
    }

    /// Add a table; the caller made room first (see `victim`).
    pub fn insert(&mut self, key: u64, data: Box<[u8]>, dirty: bool, fresh: bool) -> usize {
        self.tick += 1;
        let i = self.slots.len();
        self.slots.push(Table {
            key,
            data,
            dirty,
            fresh,
            tick: self.tick,
        });
        self.index.insert(key, i);
        i
    }

    /// The least recently used slot (clean ones preferred, as they cost no write).
    pub fn victim(&self) -> Option<usize> {
        let oldest = |dirty: bool| {
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, t)| t.dirty == dirty)
                .min_by_key(|(_, t)| t.tick)
                .map(|(i, _)| i)
        };
        oldest(false).or_else(|| oldest(true))
    }

    /// Drop a slot (written back already if it was dirty).
    pub fn remove(&mut self, i: usize) -> Table {
        let t = self.slots.swap_remove(i);
        self.index.remove(&t.key);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.key, i);
        }
        t
    }

    pub fn slots_mut(&mut self) -> impl Iterator<Item = &mut Table> {
        self.slots.iter_mut()
    }

    pub fn any_dirty(&self) -> bool {
        self.slots.iter().any(|t| t.dirty)
    }

    pub fn any_dirty_fresh(&self) -> bool {
        self.slots.iter().any(|t| t.dirty && t.fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_prefers_clean_then_oldest() {
        let mut c = TableCache::new(3);
        c.insert(10, vec![0u8; 8].into(), true, false);
        c.insert(20, vec![0u8; 8].into(), false, false);
        c.insert(30, vec![0u8; 8].into(), false, false);
        assert!(c.is_full());
        c.find(20);
        let v = c.victim().unwrap();
        assert_eq!(c.get(v).key, 30);
        c.remove(v);
        let v = c.victim().unwrap();
        assert_eq!(c.get(v).key, 20);
        c.remove(v);
        assert_eq!(c.find(10).map(|i| c.get(i).key), Some(10));
        assert!(c.find(20).is_none());
    }
}
