//! A read-only reader of bbolt files (the database etcd keeps, and what
//! `etcdctl snapshot save` writes): the two meta pages, branch and leaf
//! pages, overflow pages, nested and inline buckets. Pages are read on
//! demand through [`PageSource`] (`pread` on a file), so a large snapshot is
//! never held in memory.
//!
//! Layout (bbolt `page.go`, `meta.go`, little-endian): every page starts
//! with `id u64, flags u16, count u16, overflow u32` and spans
//! `(overflow + 1) * page_size` bytes. Meta (flag 0x04): `magic 0xED0CDAED,
//! version 2, page_size, flags, root {pgid, sequence}, freelist, pgid
//! (high water mark), txid, checksum` (FNV-1a 64 of the fields before it);
//! the valid meta with the higher txid wins. Branch (0x01): `count`
//! elements `{pos u32, ksize u32, pgid u64}`; leaf (0x02): `{flags u32, pos
//! u32, ksize u32, vsize u32}`, flag 0x01 marking a nested bucket whose
//! value is `{root pgid u64, sequence u64}` followed, when `root` is 0, by
//! the bucket's one inline leaf page. `pos` is relative to the element.
//!
//! Nothing is trusted: every page id, offset, length, flag and count is
//! checked, cycles and runaway depth are refused, and each error says which
//! page is wrong and how.

use std::collections::HashSet;

/// Where pages come from.
pub(crate) trait PageSource: Send + Sync {
    /// Fills `buf` from byte `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl PageSource for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

impl PageSource for Box<dyn PageSource> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_at(offset, buf)
    }
}

impl PageSource for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const HEADER: usize = 16;
const ELEMENT: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const BUCKET_FLAG: u32 = 0x01;
/// A B+tree deeper than this is corrupt (bbolt's are a handful deep).
const MAX_DEPTH: usize = 64;
/// Largest single page run accepted (a value spanning more is corrupt).
const MAX_RUN: u64 = 1 << 31;

/// Why a bbolt file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoltError {
    /// Reading the file failed.
    #[error("cannot read {what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a well-formed bbolt database.
    #[error("corrupt bbolt database: {0}")]
    Corrupt(String),
}

fn corrupt(msg: impl Into<String>) -> BoltError {
    BoltError::Corrupt(msg.into())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

fn fnv64a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A valid meta page's facts.
#[derive(Clone, Copy, Debug)]
struct Meta {
    page_size: u32,
    root: u64,
    high_water: u64,
    txid: u64,
}

/// Parses the meta page at the start of `page` (its header included).
fn parse_meta(page: &[u8]) -> Result<Meta, String> {
    if page.len() < HEADER + 64 {
        return Err("shorter than a meta page".into());
    }
    let flags = u16_at(page, 8);
    let m = &page[HEADER..HEADER + 64];
    let magic = u32_at(m, 0);
    if magic != MAGIC {
        return Err(format!(
            "magic {magic:#010x}, expected {MAGIC:#010x}: not a bbolt database"
        ));
    }
    if flags != META {
        return Err(format!("page flags {flags:#x}, expected a meta page (0x4)"));
    }
    let version = u32_at(m, 4);
    if version != VERSION {
        return Err(format!("format version {version}, expected {VERSION}"));
    }
    let checksum = u64_at(m, 56);
    if fnv64a(&m[..56]) != checksum {
        return Err("checksum mismatch".into());
    }
    let page_size = u32_at(m, 8);
    if !(1024..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!(
            "page size {page_size} is not a power of two in 1 KiB-64 KiB"
        ));
    }
    Ok(Meta {
        page_size,
        root: u64_at(m, 16),
        high_water: u64_at(m, 40),
        txid: u64_at(m, 48),
    })
}

/// Called with each entry: key, value, whether it is a nested bucket, and
/// where it is (`T`).
pub(crate) type EntryFn<'a, T> = dyn FnMut(&[u8], &[u8], bool, T) -> Result<(), BoltError> + 'a;

/// A bucket: rooted at a page, or inline (its one leaf page in memory).
#[derive(Clone, Debug)]
pub(crate) enum Bucket {
    /// A tree whose root is this page.
    Rooted(u64),
    /// An inline bucket's leaf page (header included).
    Inline(Vec<u8>),
}

/// Where an entry was found, to read it again later.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    /// Element `index` of leaf page `page`.
    Page {
        /// The leaf page.
        page: u64,
        /// The element.
        index: u16,
    },
    /// An entry of an inline bucket (its value, kept).
    Inline(Vec<u8>),
}

/// An open bbolt database.
pub(crate) struct Bolt<S: PageSource> {
    src: S,
    /// Bytes of the database (the file less any trailer).
    len: u64,
    page_size: u64,
    meta: Meta,
}

impl<S: PageSource> Bolt<S> {
    /// Opens the database in the first `len` bytes of `src`.
    pub(crate) fn open(src: S, len: u64) -> Result<Self, BoltError> {
        if len < 2 * 1024 {
            return Err(corrupt(format!(
                "{len} bytes is too short for the two meta pages"
            )));
        }
        let mut first = vec![0u8; HEADER + 64];
        src.read_at(0, &mut first).map_err(|source| BoltError::Io {
            what: "meta page 0".into(),
            source,
        })?;
        let m0 = parse_meta(&first);
        // Meta page 1 sits one page further; if page 0 is unreadable its
        // size is unknown, so try the sizes bbolt uses.
        let sizes: Vec<u64> = match &m0 {
            Ok(m) => vec![u64::from(m.page_size)],
            Err(_) => vec![4096, 8192, 16_384, 32_768, 65_536, 1024, 2048],
        };
        let mut m1 = Err("not found".to_owned());
        for size in sizes {
            let mut b = vec![0u8; HEADER + 64];
            if size + b.len() as u64 <= len && src.read_at(size, &mut b).is_ok() {
                m1 = parse_meta(&b).and_then(|m| {
                    if u64::from(m.page_size) == size {
                        Ok(m)
                    } else {
                        Err(format!(
                            "page size {} where meta page 1 sits at {size}",
                            m.page_size
                        ))
                    }
                });
                if m1.is_ok() {
                    break;
                }
            }
        }
        let meta = match (m0, m1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(e0), Err(e1)) => {
                return Err(corrupt(format!(
                    "neither meta page is valid (page 0: {e0}; page 1: {e1})"
                )));
            }
        };
        let page_size = u64::from(meta.page_size);
        if meta.high_water.saturating_mul(page_size) > len {
            return Err(corrupt(format!(
                "the meta page says {} pages of {page_size} bytes, but the database is {len} bytes (truncated?)",
                meta.high_water
            )));
        }
        let bolt = Bolt {
            src,
            len,
            page_size,
            meta,
        };
        bolt.check_page_id(meta.root, "the root bucket")?;
        Ok(bolt)
    }

    /// The transaction id of the meta page in use.
    pub(crate) fn txid(&self) -> u64 {
        self.meta.txid
    }

    /// The page size.
    pub(crate) fn page_size(&self) -> u64 {
        self.page_size
    }

    fn check_page_id(&self, id: u64, what: &str) -> Result<(), BoltError> {
        if id < 2 || id >= self.meta.high_water {
            return Err(corrupt(format!(
                "{what} points at page {id}, outside the data pages 2..{}",
                self.meta.high_water
            )));
        }
        Ok(())
    }

    /// Reads page `id` with its overflow pages.
    fn page(&self, id: u64) -> Result<Vec<u8>, BoltError> {
        self.check_page_id(id, "a branch element")?;
        let at = id * self.page_size;
        let io = |source| BoltError::Io {
            what: format!("page {id}"),
            source,
        };
        let mut header = [0u8; HEADER];
        self.src.read_at(at, &mut header).map_err(io)?;
        let stored = u64_at(&header, 0);
        if stored != id {
            return Err(corrupt(format!("page {id} says it is page {stored}")));
        }
        let overflow = u64::from(u32_at(&header, 12));
        let run = (overflow + 1) * self.page_size;
        if run > MAX_RUN || at + run > self.len || id + overflow >= self.meta.high_water {
            return Err(corrupt(format!(
                "page {id} has {overflow} overflow pages, past the end of the database"
            )));
        }
        let mut page = vec![0u8; run as usize];
        self.src.read_at(at, &mut page).map_err(io)?;
        Ok(page)
    }

    /// The bucket called `name` in the root bucket, if there is one.
    pub(crate) fn root_bucket(&self, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        let mut found = None;
        self.walk(
            &Bucket::Rooted(self.meta.root),
            &mut |key, value, is_bucket, _| {
                if is_bucket && key == name {
                    found = Some(bucket_value(value)?);
                }
                Ok(())
            },
        )?;
        Ok(found)
    }

    /// Calls `f(key, value, is_bucket, location)` for every entry of
    /// `bucket`, in key order.
    pub(crate) fn walk(
        &self,
        bucket: &Bucket,
        f: &mut EntryFn<'_, Location>,
    ) -> Result<(), BoltError> {
        match bucket {
            Bucket::Inline(page) => leaf_entries(page, "an inline bucket", &mut |k, v, b, _| {
                f(k, v, b, Location::Inline(v.to_vec()))
            }),
            Bucket::Rooted(root) => {
                let mut seen = HashSet::new();
                // (page id, depth); children pushed in reverse to pop in order.
                let mut stack = vec![(*root, 0usize)];
                while let Some((id, depth)) = stack.pop() {
                    if depth > MAX_DEPTH {
                        return Err(corrupt(format!(
                            "the tree is deeper than {MAX_DEPTH} pages at page {id}"
                        )));
                    }
                    if !seen.insert(id) {
                        return Err(corrupt(format!("page {id} is reached twice (a cycle)")));
                    }
                    let page = self.page(id)?;
                    match u16_at(&page, 8) {
                        BRANCH => {
                            let children = branch_children(&page, id)?;
                            stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
                        }
                        LEAF => {
                            leaf_entries(&page, &format!("page {id}"), &mut |k, v, b, index| {
                                f(k, v, b, Location::Page { page: id, index })
                            })?
                        }
                        other => {
                            return Err(corrupt(format!(
                                "page {id} has flags {other:#x} where a branch or leaf page belongs"
                            )));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The value at `location`.
    pub(crate) fn value_at(&self, location: &Location) -> Result<Vec<u8>, BoltError> {
        match location {
            Location::Inline(v) => Ok(v.clone()),
            Location::Page { page, index } => {
                let p = self.page(*page)?;
                let mut out = None;
                leaf_entries(&p, &format!("page {page}"), &mut |_, v, _, i| {
                    if i == *index {
                        out = Some(v.to_vec());
                    }
                    Ok(())
                })?;
                out.ok_or_else(|| corrupt(format!("page {page} has no element {index}")))
            }
        }
    }
}

/// A nested bucket's value: `{root, sequence}` and, inline, its page.
fn bucket_value(value: &[u8]) -> Result<Bucket, BoltError> {
    if value.len() < 16 {
        return Err(corrupt(format!(
            "a bucket entry holds {} bytes, less than its 16-byte header",
            value.len()
        )));
    }
    match u64_at(value, 0) {
        0 => Ok(Bucket::Inline(value[16..].to_vec())),
        root => Ok(Bucket::Rooted(root)),
    }
}

fn element_count(page: &[u8], what: &str) -> Result<usize, BoltError> {
    let count = usize::from(u16_at(page, 10));
    if HEADER + count * ELEMENT > page.len() {
        return Err(corrupt(format!(
            "{what} claims {count} elements, more than fit in its {} bytes",
            page.len()
        )));
    }
    Ok(count)
}

/// The child page ids of a branch page.
fn branch_children(page: &[u8], id: u64) -> Result<Vec<u64>, BoltError> {
    let count = element_count(page, &format!("branch page {id}"))?;
    if count == 0 {
        return Err(corrupt(format!("branch page {id} has no elements")));
    }
    Ok((0..count)
        .map(|i| u64_at(page, HEADER + i * ELEMENT + 8))
        .collect())
}

/// Calls `f(key, value, is_bucket, index)` for each element of a leaf page.
fn leaf_entries(page: &[u8], what: &str, f: &mut EntryFn<'_, u16>) -> Result<(), BoltError> {
    if page.len() < HEADER {
        return Err(corrupt(format!("{what} is shorter than a page header")));
    }
    let flags = u16_at(page, 8);
    if flags != LEAF {
        return Err(corrupt(format!(
            "{what} has flags {flags:#x}, expected a leaf page (0x2)"
        )));
    }
    let count = element_count(page, what)?;
    for i in 0..count {
        let at = HEADER + i * ELEMENT;
        let (eflags, pos) = (u32_at(page, at), u32_at(page, at + 4) as usize);
        let (ksize, vsize) = (
            u32_at(page, at + 8) as usize,
            u32_at(page, at + 12) as usize,
        );
        let start = at + pos;
        let range = start
            .checked_add(ksize)
            .and_then(|k| k.checked_add(vsize).map(|v| (k, v)));
        let Some((kend, vend)) = range.filter(|(_, v)| *v <= page.len()) else {
            return Err(corrupt(format!(
                "{what} element {i} (key {ksize} bytes, value {vsize} bytes at offset {start}) runs past the page's {} bytes",
                page.len()
            )));
        };
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        f(
            &page[start..kend],
            &page[kend..vend],
            eflags & BUCKET_FLAG != 0,
            index,
        )?;
    }
    Ok(())
}
