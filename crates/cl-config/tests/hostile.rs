//! Hostile input: the loaders must answer every byte sequence with diagnostics, never a panic,
//! a hang or unbounded memory. Files too large to keep as golden fixtures are generated here.

use std::path::Path;

use cl_config::diag::MAX_DIAGNOSTICS;
use cl_config::{load_app, load_cluster, ClusterConfig, Diagnostic, FileKind, Host, Severity};

/// Every path exists and is executable, so only the XML itself can be wrong.
struct AnyHost;

impl Host for AnyHost {
    fn file_kind(&self, _: &Path) -> FileKind {
        FileKind::Executable
    }
}

const VALID_CLUSTER: &str = include_str!("golden/clconf/ok-cluster1.xml");
const VALID_APP: &str = include_str!("golden/appconf/ok-apache.xml");

fn cluster() -> ClusterConfig {
    let loaded = load_cluster("clconf.xml", VALID_CLUSTER.as_bytes(), &AnyHost);
    loaded.config.unwrap_or_else(|| panic!("valid cluster must load: {:?}", loaded.diagnostics))
}

/// Load `bytes` both ways; check the invariants every outcome must keep.
fn load_both(bytes: &[u8], cluster: &ClusterConfig) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let c = load_cluster("clconf.xml", bytes, &AnyHost);
    let a = load_app("appconf.xml", bytes, "apache", cluster, &[], &AnyHost);
    for (ok, diagnostics) in
        [(c.config.is_some(), &c.diagnostics), (a.config.is_some(), &a.diagnostics)]
    {
        let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
        assert_eq!(ok, errors == 0, "a config is returned exactly when there is no error");
        assert!(diagnostics.len() <= MAX_DIAGNOSTICS + 1, "diagnostics are capped");
        for d in diagnostics {
            assert!(d.line >= 1 && d.column >= 1, "positions are 1-based: {d}");
            assert!(!d.message.is_empty());
        }
    }
    (c.diagnostics, a.diagnostics)
}

fn only_error(diagnostics: &[Diagnostic]) -> &Diagnostic {
    assert_eq!(diagnostics.len(), 1, "expected one diagnostic, got {diagnostics:#?}");
    assert_eq!(diagnostics[0].severity, Severity::Error);
    &diagnostics[0]
}

#[test]
fn files_over_the_limit_are_refused_before_parsing() {
    let cluster = cluster();
    for size in [2 * 1024 * 1024, 10 * 1024 * 1024] {
        // Valid XML, so only the size can be the reason.
        let mut text = String::from("<linuxha>");
        while text.len() < size {
            text.push_str("<!-- padding padding padding padding padding padding padding -->\n");
        }
        text.push_str("</linuxha>");
        let (c, a) = load_both(text.as_bytes(), &cluster);
        for diagnostics in [&c, &a] {
            let d = only_error(diagnostics);
            assert_eq!((d.line, d.column), (1, 1));
            assert!(d.message.contains("too large"), "{d}");
            assert!(d.message.contains(&text.len().to_string()), "{d}");
        }
    }
}

#[test]
fn deep_nesting_is_refused() {
    let cluster = cluster();
    let depth = 5000;
    let closed = format!("<linuxha>{}{}</linuxha>", "<a>".repeat(depth), "</a>".repeat(depth));
    let (c, a) = load_both(closed.as_bytes(), &cluster);
    let d = only_error(&c);
    assert!(d.message.contains("nested more than"), "{d}");
    assert!(only_error(&a).message.contains("nested more than"));
    // Never closed: a syntax error at the end, still no panic.
    let open = format!("<linuxha>{}", "<a>".repeat(depth));
    let (c, _) = load_both(open.as_bytes(), &cluster);
    assert!(only_error(&c).message.contains("not well-formed"), "{c:?}");
}

#[test]
fn invalid_utf8_in_the_middle_of_a_line_is_located() {
    let cluster = cluster();
    let mut bytes =
        VALID_CLUSTER.replace("<name>cluster1</name>", "<name>clu\u{1}ster1</name>").into_bytes();
    let at = bytes.iter().position(|&b| b == 1).expect("marker");
    bytes[at] = 0xFF;
    let line = VALID_CLUSTER.lines().position(|l| l.contains("<name>")).expect("name line") + 1;
    let (c, a) = load_both(&bytes, &cluster);
    for diagnostics in [&c, &a] {
        let d = only_error(diagnostics);
        assert!(d.message.contains("not valid UTF-8") && d.message.contains("0xFF"), "{d}");
        // `    <name>clu` is 13 characters; the bad byte is the 14th.
        assert_eq!((d.line as usize, d.column), (line, 14), "{d}");
    }
}

#[test]
fn entities_and_doctypes_are_never_expanded() {
    let cluster = cluster();
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE linuxha [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
]>
<linuxha><global><name>&d;</name></global></linuxha>"#;
    let external = r#"<?xml version="1.0"?>
<!DOCTYPE linuxha [ <!ENTITY xxe SYSTEM "file:///etc/shadow"> ]>
<linuxha><global><name>&xxe;</name></global></linuxha>"#;
    let public =
        r#"<!DOCTYPE linuxha PUBLIC "-//x//y" "http://example.com/linuxha.dtd"><linuxha/>"#;
    for text in [laughs, external, public] {
        let (c, a) = load_both(text.as_bytes(), &cluster);
        for diagnostics in [&c, &a] {
            let d = only_error(diagnostics);
            assert!(d.message.contains("<!DOCTYPE>"), "{d}");
            assert_eq!(d.column, 1);
        }
    }
    // A reference to an entity nobody declared is a syntax error, not an expansion.
    let undeclared = VALID_CLUSTER.replace("<name>cluster1</name>", "<name>&xxe;</name>");
    let (c, _) = load_both(undeclared.as_bytes(), &cluster);
    assert!(only_error(&c).message.contains("xxe"), "{c:?}");
    // Character references are plain XML and fine.
    let chars = VALID_CLUSTER.replace("<name>cluster1</name>", "<name>&#99;luster1</name>");
    assert!(load_cluster("c", chars.as_bytes(), &AnyHost).config.is_some());
}

#[test]
fn floods_of_problems_are_capped_and_fast() {
    let cluster = cluster();
    // Nearly 1 MB of unknown elements on one line, and a huge list of known connections.
    let unknown = format!("<linuxha>{}</linuxha>", "<zz/>".repeat(90_000));
    let too_many_nodes = format!("<linuxha>{}</linuxha>", "<zz/>".repeat(190_000));
    let known = VALID_CLUSTER.replace(
        "  10.10.0.1\n",
        &(0..60_000)
            .map(|i| format!("10.{}.{}.{} ", 100 + i / 65_536, (i / 256) % 256, i % 256))
            .collect::<String>(),
    );
    let duplicates = VALID_CLUSTER.replace("  10.10.0.1\n", &"10.99.0.1\n".repeat(90_000));
    let vips = VALID_APP.replace(
        "    <network net=\"public\" ip=\"10.10.0.100\" prefix=\"24\"/>\n",
        &"<network net=\"nowhere\" ip=\"10.10.0.100\" prefix=\"24\"/>\n".repeat(15_000),
    );
    let filesystems = VALID_APP.replace(
        "    <filesystem device=\"/dev/linuxha/apache\" mountpoint=\"/apache\" type=\"ext4\" options=\"noatime\" fsck=\"yes\"/>\n",
        &(0..14_000)
            .map(|i| format!("<filesystem device=\"/dev/vg/d{i}\" mountpoint=\"/m/{i}\" type=\"ext4\"/>\n"))
            .collect::<String>(),
    );
    let nodes = format!(
        "<linuxha>{}</linuxha>",
        (0..9_000)
            .map(|i| format!("<node name=\"n{i}\"><network name=\"a\" interface=\"e\" address=\"10.{}.{}.1\" prefix=\"24\"/></node>\n", i / 256, i % 256))
            .collect::<String>()
    );
    let networks = format!(
        "<linuxha><node name=\"n\">{}</node></linuxha>",
        (0..9_000)
            .map(|i| format!(
                "<network name=\"n{i}\" interface=\"e\" address=\"10.{}.{}.1\" prefix=\"24\"/>\n",
                i / 256,
                i % 256
            ))
            .collect::<String>()
    );
    for text in [unknown, too_many_nodes, known, duplicates, vips, filesystems, nodes, networks] {
        assert!(text.len() <= cl_config::xml::MAX_FILE_BYTES, "{}", text.len());
        let started = std::time::Instant::now();
        load_both(text.as_bytes(), &cluster);
        // Generous for a debug build on a busy machine; quadratic behaviour takes minutes.
        assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
    }
}

/// xorshift64*: a fixed-seed generator, so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_bytes_never_panic() {
    let cluster = cluster();
    let mut rng = Rng(0x5eed_1a11_0ba5_e5ed);
    // Pieces that steer random input towards the interesting parts of the parser.
    let pieces: [&[u8]; 16] = [
        b"<",
        b">",
        b"</",
        b"/>",
        b"=\"",
        b"\"",
        b"<linuxha>",
        b"<appconf>",
        b"<global>",
        b"<node name=\"",
        b"<network ",
        b"&",
        b"<!--",
        b"<![CDATA[",
        b"\xff",
        b"\n",
    ];
    for _ in 0..3000 {
        let len = rng.below(300);
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            if rng.below(3) == 0 {
                bytes.extend_from_slice(pieces[rng.below(pieces.len())]);
            } else {
                bytes.push((rng.next() >> 56) as u8);
            }
        }
        load_both(&bytes, &cluster);
    }
}

#[test]
fn mutated_valid_files_never_panic() {
    let cluster = cluster();
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for source in [VALID_CLUSTER, VALID_APP] {
        for _ in 0..2000 {
            let mut bytes = source.as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len());
                match rng.below(4) {
                    0 => bytes[at] = (rng.next() >> 56) as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    2 => bytes.insert(at, b"<>\"/= &x\n"[rng.below(9)]),
                    _ => {
                        // Duplicate a slice: repeated elements and attributes.
                        let end = (at + rng.below(80)).min(bytes.len());
                        let copy = bytes[at..end].to_vec();
                        bytes.splice(at..at, copy);
                    }
                }
            }
            load_both(&bytes, &cluster);
        }
    }
}
