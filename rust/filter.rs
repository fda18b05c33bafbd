//! Name filters, applied before any `stat` so a non-media entry costs nothing beyond `getdents`.
//!
//! A file is reported when its name is not hidden (leading `.`), not temporary
//! (`*.part *.tmp *.download *.!qB`), not metadata (`*.nfo *.jpg *.png *.srt *.sub *.idx`) and its
//! extension — the text after the last `.` — is one of the wanted ones, all compared without
//! regard to case. A directory is entered when it is not hidden and not a NAS/OS system directory
//! (`@eaDir`, `.Trash-*`, `$RECYCLE.BIN`, `System Volume Information`).

/// Names of files still being written (downloads, partial copies), lower case.
pub const TEMP_SUFFIXES: [&str; 4] = [".part", ".tmp", ".download", ".!qb"];
/// Metadata beside media files (artwork, subtitles, info files), lower case.
pub const METADATA_SUFFIXES: [&str; 6] = [".nfo", ".jpg", ".png", ".srt", ".sub", ".idx"];

#[derive(Clone, Debug)]
pub struct Filter {
    /// Lower-case extensions without the dot; `None` accepts every extension.
    extensions: Option<Vec<Box<[u8]>>>,
    pub skip_hidden: bool,
    pub skip_temp: bool,
    pub skip_metadata: bool,
    pub skip_system_dirs: bool,
}

impl Default for Filter {
    fn default() -> Self {
        Filter::new(Some(crate::DEFAULT_EXTENSIONS.iter().copied()))
    }
}

fn ends_with_ignore_case(name: &[u8], suffix: &[u8]) -> bool {
    name.len() >= suffix.len() && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// Lower-cases an extension; non-ASCII text is lower-cased as Unicode when it is valid UTF-8.
fn lower(ext: &[u8]) -> Box<[u8]> {
    if ext.is_ascii() {
        return ext.to_ascii_lowercase().into_boxed_slice();
    }
    match std::str::from_utf8(ext) {
        Ok(text) => text.to_lowercase().into_bytes().into_boxed_slice(),
        Err(_) => ext.into(),
    }
}

impl Filter {
    /// A filter with every `skip_*` on. Extensions may be given with or without a leading dot.
    pub fn new<S: AsRef<str>>(extensions: Option<impl IntoIterator<Item = S>>) -> Filter {
        let extensions = extensions.map(|exts| {
            let mut wanted: Vec<Box<[u8]>> = Vec::new();
            for ext in exts {
                let ext = ext.as_ref();
                let ext = lower(ext.strip_prefix('.').unwrap_or(ext).as_bytes());
                if !wanted.contains(&ext) {
                    wanted.push(ext);
                }
            }
            wanted
        });
        Filter {
            extensions,
            skip_hidden: true,
            skip_temp: true,
            skip_metadata: true,
            skip_system_dirs: true,
        }
    }

    /// The wanted extensions, lower case without the dot; `None` when every extension is.
    pub fn extensions(&self) -> Option<&[Box<[u8]>]> {
        self.extensions.as_deref()
    }

    fn extension_wanted(&self, name: &[u8]) -> bool {
        let Some(wanted) = &self.extensions else {
            return true;
        };
        let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
            return false;
        };
        let ext = &name[dot + 1..];
        if ext.is_ascii() {
            wanted.iter().any(|w| w.eq_ignore_ascii_case(ext))
        } else {
            let ext = lower(ext);
            wanted.contains(&ext)
        }
    }

    /// Whether a regular file with this name is reported.
    pub fn accepts_file(&self, name: &[u8]) -> bool {
        if self.skip_hidden && name.first() == Some(&b'.') {
            return false;
        }
        if self.skip_temp
            && TEMP_SUFFIXES
                .iter()
                .any(|s| ends_with_ignore_case(name, s.as_bytes()))
        {
            return false;
        }
        if self.skip_metadata
            && METADATA_SUFFIXES
                .iter()
                .any(|s| ends_with_ignore_case(name, s.as_bytes()))
        {
            return false;
        }
        self.extension_wanted(name)
    }

    /// Whether a directory with this name is entered.
    pub fn accepts_dir(&self, name: &[u8]) -> bool {
        if self.skip_hidden && name.first() == Some(&b'.') {
            return false;
        }
        if self.skip_system_dirs && is_system_dir(name) {
            return false;
        }
        true
    }
}

fn is_system_dir(name: &[u8]) -> bool {
    name == b"@eaDir"
        || name.starts_with(b".Trash-")
        || name.eq_ignore_ascii_case(b"$RECYCLE.BIN")
        || name.eq_ignore_ascii_case(b"System Volume Information")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_files() -> Filter {
        Filter::new(None::<Vec<String>>)
    }

    /// Asserts that `f` takes (or, `accepted` false, leaves out) each of the files `names`.
    #[track_caller]
    fn assert_files(f: &Filter, accepted: bool, names: &[&str]) {
        for name in names {
            assert_eq!(f.accepts_file(name.as_bytes()), accepted, "{name}");
        }
    }

    #[test]
    fn default_extensions_any_case() {
        let f = Filter::default();
        let media = [
            "a.mkv", "a.MKV", "b.Mp4", "c.avi", "d.m4v", "e.ts", "f.WMV", "x.y.mkv",
        ];
        assert_files(&f, true, &media);
        let other = ["a.mkv.bak", "mkv", "a.mk", "a", "a.mkvx", "a.txt", "a."];
        assert_files(&f, false, &other);
    }

    #[test]
    fn extensions_given_with_dot_or_case() {
        let f = Filter::new(Some([".MKV", "iso"]));
        assert!(f.accepts_file(b"a.mkv"));
        assert!(f.accepts_file(b"a.ISO"));
        assert!(!f.accepts_file(b"a.mp4"));
    }

    #[test]
    fn non_ascii_extension_compares_as_unicode() {
        let f = Filter::new(Some(["ÉP"]));
        assert!(f.accepts_file("film.ép".as_bytes()));
        assert!(f.accepts_file("film.ÉP".as_bytes()));
        assert!(!f.accepts_file(b"film.\xff"));
    }

    #[test]
    fn hidden_files_and_dirs() {
        let mut f = Filter::default();
        assert!(!f.accepts_file(b".secret.mkv"));
        assert!(!f.accepts_dir(b".git"));
        f.skip_hidden = false;
        assert!(f.accepts_file(b".secret.mkv"));
        assert!(f.accepts_dir(b".git"));
    }

    #[test]
    fn temp_files_any_case_even_without_extension_filter() {
        let mut f = all_files();
        let temp = [
            "a.mkv.part",
            "a.TMP",
            "b.download",
            "c.mkv.!qB",
            "d.!QB",
            ".part",
        ];
        assert_files(&f, false, &temp);
        f.skip_temp = false;
        f.skip_hidden = false;
        assert_files(&f, true, &["a.mkv.part", ".part"]);
    }

    #[test]
    fn metadata_files() {
        let mut f = all_files();
        let metadata = ["a.nfo", "poster.JPG", "b.png", "c.en.srt", "d.sub", "e.IDX"];
        assert_files(&f, false, &metadata);
        assert_files(&f, true, &["movie.mkv", "README"]);
        f.skip_metadata = false;
        assert!(f.accepts_file(b"a.nfo"));
    }

    #[test]
    fn metadata_filter_wins_over_extension_list() {
        let f = Filter::new(Some(["jpg", "mkv"]));
        assert!(!f.accepts_file(b"a.jpg"));
        assert!(f.accepts_file(b"a.mkv"));
    }

    #[test]
    fn system_dirs() {
        let mut f = Filter::default();
        for name in [
            "@eaDir",
            ".Trash-1000",
            "$RECYCLE.BIN",
            "$Recycle.Bin",
            "System Volume Information",
        ] {
            assert!(!f.accepts_dir(name.as_bytes()), "{name}");
        }
        assert!(f.accepts_dir(b"Movies"));
        assert!(f.accepts_dir(b"eaDir"));
        f.skip_system_dirs = false;
        f.skip_hidden = false;
        assert!(f.accepts_dir(b"@eaDir"));
        assert!(f.accepts_dir(b".Trash-1000"));
    }
}
