//! Byte-string path helpers. Paths stay bytes end to end: a Linux name need not be UTF-8.

/// Makes `path` absolute (against `cwd` when relative) and lexically clean: no empty or `.`
/// components, no trailing slash. `..` is kept as is (resolving it needs the file system).
pub fn absolute(path: &[u8], cwd: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cwd.len() + path.len() + 1);
    let joined: Vec<u8>;
    let full = if path.first() == Some(&b'/') {
        path
    } else {
        joined = [cwd, b"/", path].concat();
        &joined
    };
    for component in full.split(|&b| b == b'/') {
        if component.is_empty() || component == b"." {
            continue;
        }
        out.push(b'/');
        out.extend_from_slice(component);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// `base/rel`, where an empty `rel` is `base` itself and the root `/` does not double its slash.
pub fn join(base: &[u8], rel: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        return base.to_vec();
    }
    let mut out = Vec::with_capacity(base.len() + 1 + rel.len());
    out.extend_from_slice(base);
    if !base.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(rel);
    out
}

/// The path of `path` relative to `root` when it lies strictly below it (both absolute and clean).
pub fn strictly_below<'a>(root: &[u8], path: &'a [u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(root)?;
    let rest = if root.ends_with(b"/") {
        rest
    } else {
        rest.strip_prefix(b"/")?
    };
    (!rest.is_empty()).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_cleans_and_anchors() {
        assert_eq!(absolute(b"/a//b/./c/", b"/cwd"), b"/a/b/c");
        assert_eq!(absolute(b"media/tv", b"/srv"), b"/srv/media/tv");
        assert_eq!(absolute(b"/", b"/cwd"), b"/");
        assert_eq!(absolute(b".", b"/"), b"/");
        assert_eq!(absolute(b"/a/../b", b"/"), b"/a/../b");
    }

    #[test]
    fn join_handles_root_and_empty() {
        assert_eq!(join(b"/", b"x"), b"/x");
        assert_eq!(join(b"/a", b"x/y"), b"/a/x/y");
        assert_eq!(join(b"/a", b""), b"/a");
    }

    #[test]
    fn strictly_below_needs_a_component_boundary() {
        assert_eq!(strictly_below(b"/a", b"/a/b/c"), Some(&b"b/c"[..]));
        assert_eq!(strictly_below(b"/a", b"/ab"), None);
        assert_eq!(strictly_below(b"/a", b"/a"), None);
        assert_eq!(strictly_below(b"/", b"/x"), Some(&b"x"[..]));
    }
}
