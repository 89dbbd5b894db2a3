//! Module dependencies point one way. This test parses every file under
//! `src/` with `syn`, collects each reference to another module of the crate
//! (`use` trees with their groups, globs and renames; `crate::`, `super::` and
//! `self::` paths in types, expressions, patterns, impl targets and macro
//! calls), and checks two graphs built from them:
//!
//! * between top-level modules: every edge is in [`LAYERS`], and there is no
//!   cycle;
//! * between the files of each directory (`api::store` -> `api::multipart`):
//!   there is no cycle.
//!
//! A failure names the file and line of each offending reference, so the fix
//! is to move the type to where it belongs, not to widen the table or hide
//! the edge behind a `pub use`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// Every top-level module and the modules it may use, lowest layer first.
/// `main` is the binary (`src/main.rs`). A module missing here fails the test:
/// a new module has to say where it sits. An entry may name a module it does
/// not use yet; it may not name one above it.
const LAYERS: &[(&str, &[&str])] = &[
    // The rules of the system as pure functions: no I/O, no clock, no
    // randomness, and no other module (tests/core_is_pure.rs keeps I/O out).
    ("core", &[]),
    // Injected clock, randomness and blocking work: what a simulator
    // replaces. Anything above core may use it; it uses nothing of ours.
    ("env", &[]),
    // A watched value whose waiters wake in order (tokio's watch wakes them
    // in a random order a seed cannot replay); a leaf like env.
    ("watched", &["env"]),
    // The error-code vocabulary, mapped once to HTTP and once to gRPC.
    ("error", &["env"]),
    // Logging, traces and every metric name: used from every layer above.
    ("telemetry", &["core", "env", "error"]),
    // Storage knows objects and error codes, nothing about who calls it.
    ("storage", &["core", "env", "error"]),
    // Deliberate bugs for the fault suite (feature `fault-injection`),
    // planted in the replica, the coordinator and membership.
    ("faults", &["core", "env", "storage"]),
    // The replica role: what a node does with a key it holds, and what a call
    // to it carries and how it fails (`replica::call`). It answers the
    // coordinator but never depends on it, on membership, or on the edges
    // (rpc, services, api, node) that carry calls to it.
    ("replica", &["core", "env", "error", "telemetry", "storage", "faults"]),
    // One client operation -> replica calls -> a quorum decision. It sees the
    // cluster through its own traits (`Topology`, `AddressBook`,
    // `ReplicaClient`), never membership, and storage only through the
    // replica's errors.
    ("coordinator", &["core", "env", "error", "telemetry", "faults", "replica"]),
    // The members and the ring as this node sees them, persisted in storage;
    // implements the coordinator's traits.
    ("membership", &["core", "env", "watched", "error", "telemetry", "storage", "faults", "coordinator"]),
    // The gRPC edge: protobuf types live only here; thin servers over the
    // replica, the coordinator's traits and membership, and their clients.
    ("rpc", &["core", "env", "error", "telemetry", "storage", "replica", "coordinator", "membership"]),
    // Background workers (gossip, handoff), built on the rpc clients.
    ("services", &["core", "env", "error", "telemetry", "storage", "replica", "coordinator", "membership", "rpc"]),
    // The HTTP edge: parse, call the coordinator, answer.
    ("api", &["core", "env", "error", "telemetry", "storage", "coordinator", "membership", "services"]),
    // Serves the HTTP edge, over TLS with the rpc layer's accept loop and
    // certificates when the node has an HTTP certificate.
    ("https", &["env", "telemetry", "rpc"]),
    // An HTTP client, plain or HTTPS checked against a CA file: the tools'
    // (below), and a starting node's, which asks `-j`'s HTTP port where the
    // member's cluster port is.
    ("http_client", &["env"]),
    // Settings, parsed and validated into the typed settings of the layers
    // they configure: above those layers, below the composition root.
    ("config", &["core", "env", "error", "telemetry", "replica"]),
    // The composition root: builds every part and wires them together.
    (
        "node",
        &[
            "core",
            "env",
            "error",
            "telemetry",
            "storage",
            "faults",
            "replica",
            "coordinator",
            "membership",
            "rpc",
            "services",
            "api",
            "https",
            "http_client",
            "config",
        ],
    ),
    // Tools the binary runs beside the server; nothing in the server uses them.
    ("bench", &["core", "env", "config", "coordinator", "http_client"]),
    ("devcluster", &["env", "config", "node"]),
    // The operator's CLI: a client of a node's HTTP API; it parses token
    // grants with the core's rules (core::security) before sending them.
    ("admin_cli", &["core", "env", "http_client"]),
    // `vinzclortho certs`: the cluster CA and node certificates, files only.
    ("certs", &["core", "env"]),
    // The command line: the server's flags and one subcommand per tool.
    ("cli", &["env", "config", "bench", "devcluster", "admin_cli", "certs"]),
    // The binary: parse the command line, run the server or a tool.
    ("main", &["env", "cli", "config", "telemetry", "node", "bench", "devcluster", "admin_cli", "certs"]),
];

/// The tools the binary runs beside the server, and what runs them; every
/// other module is part of the server.
const TOOLS: &[&str] = &["http_client", "bench", "devcluster", "admin_cli", "certs", "cli", "main"];

fn allowed(from: &str) -> &'static [&'static str] {
    LAYERS.iter().find(|(m, _)| *m == from).map(|(_, deps)| *deps).unwrap_or(&[])
}

/// The rules the table must keep whatever else changes in it: widening the
/// table past one of these fails here, not silently.
#[test]
fn allow_list_keeps_the_layer_rules() {
    let deps = |m: &str| allowed(m).iter().copied().collect::<BTreeSet<_>>();
    assert!(deps("core").is_empty(), "core depends on nothing else in the crate");
    assert!(deps("env").is_empty(), "env depends on no other module of the crate");
    for (m, ds) in LAYERS.iter().filter(|(m, _)| !["core", "env"].contains(m)) {
        assert!(ds.contains(&"env"), "{m} may use env: every module but core may");
    }
    assert!(deps("storage").is_subset(&["core", "env", "error"].into()), "storage uses only core and error");
    for up in ["coordinator", "membership", "rpc", "services", "api", "node"] {
        assert!(!deps("replica").contains(up), "the replica role never uses {up}");
    }
    assert!(!deps("coordinator").contains("membership"), "the coordinator sees membership through its traits");
    let users = |of: &str| LAYERS.iter().filter(|(_, ds)| ds.contains(&of)).map(|(m, _)| *m).collect::<Vec<_>>();
    for user in users("node") {
        assert!(["main", "devcluster"].contains(&user), "only main and devcluster may use node, not {user}");
    }
    for tool in ["bench", "devcluster"] {
        for user in users(tool) {
            assert!(TOOLS.contains(&user), "{tool} is a tool: {user}, in the server, may not use it");
        }
    }
    // Lowest layer first: an entry names only modules listed before it.
    for (i, (m, ds)) in LAYERS.iter().enumerate() {
        for d in *ds {
            let below = LAYERS[..i].iter().any(|(l, _)| l == d);
            assert!(below, "{m} may use {d} only if {d} is listed before it");
        }
    }
}

/// One reference from a source module to a module path of the library.
#[derive(Debug, Clone)]
struct Ref {
    /// Module the reference is written in (`["api", "store"]`; `["main"]`
    /// for the binary).
    from: Vec<String>,
    /// Absolute path it names, from the library root, items included.
    to: Vec<String>,
    file: PathBuf,
    line: usize,
}

impl Ref {
    fn evidence(&self) -> String {
        format!("{}:{}: {}", rel(&self.file), self.line, self.to.join("::"))
    }
}

fn rel(file: &Path) -> String {
    file.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(file).display().to_string()
}

/// A parsed file under `src/` and the module it defines.
struct SourceFile {
    path: PathBuf,
    /// `[]` for lib.rs, `["main"]` for main.rs, `["api", "store"]` for
    /// src/api/store.rs and src/api/store/mod.rs.
    module: Vec<String>,
    ast: syn::File,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn parse_sources() -> Vec<SourceFile> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Vec<String> = relative.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|m| m == "mod") || module == ["lib"] {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", rel(&path)));
            SourceFile { path, module, ast }
        })
        .collect()
}

/// Every module of the library (files and inline `mod x { .. }`), mapped to
/// the file that holds it.
fn module_files(files: &[SourceFile]) -> BTreeMap<Vec<String>, PathBuf> {
    struct Inline<'a> {
        stack: Vec<String>,
        file: &'a Path,
        out: &'a mut BTreeMap<Vec<String>, PathBuf>,
    }
    impl<'ast> Visit<'ast> for Inline<'_> {
        fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
            if m.content.is_some() {
                self.stack.push(m.ident.to_string());
                self.out.insert(self.stack.clone(), self.file.to_owned());
                visit::visit_item_mod(self, m);
                self.stack.pop();
            }
        }
    }
    let mut out = BTreeMap::new();
    for f in files.iter().filter(|f| !is_main(f)) {
        out.insert(f.module.clone(), f.path.clone());
        Inline { stack: f.module.clone(), file: &f.path, out: &mut out }.visit_file(&f.ast);
    }
    out
}

fn is_main(f: &SourceFile) -> bool {
    f.module == ["main"]
}

/// Walks one file and records every path that names a module of the library.
struct Collector<'a> {
    /// The module being walked (grows inside inline `mod`s).
    module: Vec<String>,
    /// The binary names the library `vinzclortho`; the library says `crate`.
    in_main: bool,
    modules: &'a BTreeMap<Vec<String>, PathBuf>,
    file: &'a Path,
    refs: Vec<Ref>,
    /// `pub use` items: the public name (`["storage", "MemoryStore"]`) and
    /// the path it stands for (`["storage", "memory", "MemoryStore"]`).
    reexports: Vec<(Vec<String>, Vec<String>)>,
}

impl Collector<'_> {
    /// Resolves a path as written in the current module to an absolute one,
    /// or `None` if it names something outside the library.
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?.as_str();
        if self.in_main {
            return (first == "vinzclortho").then(|| segments[1..].to_vec());
        }
        match first {
            "crate" => Some(segments[1..].to_vec()),
            "self" => Some([&self.module[..], &segments[1..]].concat()),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                assert!(ups <= self.module.len(), "{}: super past the crate root", rel(self.file));
                Some([&self.module[..self.module.len() - ups], &segments[ups..]].concat())
            }
            // `store::http_date` inside `api`: a path through a child module.
            _ => {
                let child = [&self.module[..], &segments[..1]].concat();
                self.modules.contains_key(&child).then(|| [&self.module[..], segments].concat())
            }
        }
    }

    fn record(&mut self, segments: &[String], line: usize) -> Option<Vec<String>> {
        let to = self.resolve(segments).filter(|to| !to.is_empty())?;
        let from = if self.in_main { vec!["main".to_owned()] } else { self.module.clone() };
        self.refs.push(Ref { from, to: to.clone(), file: self.file.to_owned(), line });
        Some(to)
    }

    /// Flattens a `use` tree into the paths it imports; `public` for a
    /// `pub use`, whose names are remembered as stand-ins for their targets.
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, public: bool) {
        let leaf = |this: &mut Self, prefix: &mut Vec<String>, ident: &syn::Ident, alias: &syn::Ident| {
            let line = ident.span().start().line;
            let imported = if ident == "self" {
                this.record(prefix, line)
            } else {
                prefix.push(ident.to_string());
                let imported = this.record(prefix, line);
                prefix.pop();
                imported
            };
            if let Some(target) = imported.filter(|_| public) {
                let name = if alias == "self" { target.last().unwrap().clone() } else { alias.to_string() };
                this.reexports.push(([&this.module[..], &[name]].concat(), target));
            }
        };
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, public);
                prefix.pop();
            }
            syn::UseTree::Name(n) => leaf(self, prefix, &n.ident, &n.ident),
            syn::UseTree::Rename(r) => leaf(self, prefix, &r.ident, &r.rename),
            syn::UseTree::Glob(g) => {
                let line = g.star_token.span.start().line;
                let imported = self.record(prefix, line);
                // Which names a glob re-exports is not known here, so a use of
                // one of them would be blamed on this module: not allowed.
                assert!(
                    !(public && imported.is_some()),
                    "{}:{line}: `pub use ..::*` of a crate module hides where its names come from",
                    rel(self.file)
                );
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t, public)),
        }
    }

    /// Macro bodies are tokens to syn: find `a::b::c` runs in them.
    fn tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let is_colons = |i: usize| {
            matches!((tokens.get(i), tokens.get(i + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
        };
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(first) if i < 2 || !is_colons(i - 2) => {
                    let mut segments = vec![first.to_string()];
                    while is_colons(i + 1) {
                        let Some(TokenTree::Ident(next)) = tokens.get(i + 3) else { break };
                        segments.push(next.to_string());
                        i += 3;
                    }
                    if segments.len() > 1 {
                        self.record(&segments, first.span().start().line);
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // `mod x;` declares a file module: not a dependency.
        if m.content.is_some() {
            self.module.push(m.ident.to_string());
            visit::visit_item_mod(self, m);
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            let public = !matches!(u.vis, syn::Visibility::Inherited);
            self.use_tree(&mut Vec::new(), &u.tree, public);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            if let Some(first) = p.segments.first() {
                self.record(&segments, first.ident.span().start().line);
            }
        }
        visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        visit::visit_macro(self, m);
        self.tokens(m.tokens.clone());
    }
}

fn collect_refs(files: &[SourceFile], modules: &BTreeMap<Vec<String>, PathBuf>) -> Vec<Ref> {
    let mut refs = Vec::new();
    let mut reexports = BTreeMap::new();
    for f in files {
        let module = if is_main(f) { Vec::new() } else { f.module.clone() };
        let mut c =
            Collector { module, in_main: is_main(f), modules, file: &f.path, refs: Vec::new(), reexports: Vec::new() };
        c.visit_file(&f.ast);
        refs.append(&mut c.refs);
        reexports.extend(c.reexports);
    }
    // A name used through a `pub use` is a use of what it stands for:
    // `storage::MemoryStore` is `storage::memory::MemoryStore`.
    for r in &mut refs {
        for _ in 0..8 {
            let Some(n) = (1..=r.to.len()).rev().find(|n| reexports.contains_key(&r.to[..*n])) else { break };
            let target: &Vec<String> = &reexports[&r.to[..n]];
            if r.to.starts_with(target) {
                break;
            }
            r.to = [&target[..], &r.to[n..]].concat();
        }
    }
    refs
}

/// Edges of a graph, each with the references that make it.
type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn add_edge(g: &mut Graph, from: &str, to: &str, evidence: String) {
    g.entry(to.to_owned()).or_default();
    g.entry(from.to_owned()).or_default().entry(to.to_owned()).or_default().push(evidence);
}

fn top_level_graph(refs: &[Ref]) -> Graph {
    let mut g = Graph::new();
    for r in refs {
        if r.from[0] != r.to[0] {
            add_edge(&mut g, &r.from[0], &r.to[0], r.evidence());
        }
    }
    g
}

/// One graph per directory under `src/`, between the files in it: a node is
/// a file's module (`api::store`, `api::multipart`). A directory's `mod.rs`
/// is its front (it declares, wires and re-exports the files, which share
/// what it defines), so it counts as a file of the directory above; names
/// re-exported through it were resolved to the file that defines them, so a
/// sibling's type reached through `super::` still counts as using the sibling.
fn directory_graphs(refs: &[Ref], modules: &BTreeMap<Vec<String>, PathBuf>) -> BTreeMap<PathBuf, Graph> {
    // The file that holds a path: the longest prefix that is a module.
    let file_of = |path: &[String]| (0..=path.len()).rev().find_map(|n| modules.get(&path[..n]).cloned());
    let directory = |file: &Path| {
        let dir = file.parent().unwrap();
        if file.file_name().unwrap() == "mod.rs" { dir.parent().unwrap().to_owned() } else { dir.to_owned() }
    };
    // Inline modules belong to their file's node, named by the file's module.
    let node = |file: &Path| {
        let modules_in_file = modules.iter().filter(|(_, f)| f.as_path() == file).map(|(m, _)| m);
        modules_in_file.min_by_key(|m| m.len()).unwrap().join("::")
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graphs = BTreeMap::<PathBuf, Graph>::new();
    for r in refs.iter().filter(|r| r.from != ["main"]) {
        let (Some(from_file), Some(to_file)) = (file_of(&r.from), file_of(&r.to)) else {
            continue;
        };
        let dir = directory(&from_file);
        if from_file == to_file || dir != directory(&to_file) || dir == src {
            continue;
        }
        add_edge(graphs.entry(dir).or_default(), &node(&from_file), &node(&to_file), r.evidence());
    }
    graphs
}

/// One cycle per strongly connected component, as a path `a -> b -> a`.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    // Tarjan's algorithm, recursive: these graphs have a few dozen nodes.
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        components: Vec<Vec<&'a str>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g[v].keys() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    self.low.insert(v, self.low[v].min(self.low[w]));
                } else if self.on_stack.contains(w) {
                    self.low.insert(v, self.low[v].min(self.index[w]));
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
    let mut t = Tarjan {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.components.iter().filter(|c| c.len() > 1).map(|c| shortest_cycle(g, c)).collect()
}

/// The shortest way from the component's first node back to itself.
fn shortest_cycle(g: &Graph, component: &[&str]) -> Vec<String> {
    let inside: BTreeSet<&str> = component.iter().copied().collect();
    let start = *inside.iter().next().unwrap();
    let mut came_from = BTreeMap::<&str, &str>::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in g[v].keys().map(String::as_str).filter(|w| inside.contains(w)) {
            if w == start {
                let mut path = vec![start.to_owned(), v.to_owned()];
                let mut at = v;
                while at != start {
                    at = came_from[at];
                    path.push(at.to_owned());
                }
                path.reverse();
                return path;
            }
            if !came_from.contains_key(w) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component has a cycle")
}

fn describe_cycle(g: &Graph, cycle: &[String]) -> String {
    let mut out = cycle.join(" -> ");
    for pair in cycle.windows(2) {
        for evidence in &g[&pair[0]][&pair[1]] {
            out.push_str(&format!("\n    {} -> {}: {evidence}", pair[0], pair[1]));
        }
    }
    out
}

fn graph_and_modules() -> (Vec<Ref>, BTreeMap<Vec<String>, PathBuf>, Vec<SourceFile>) {
    let files = parse_sources();
    let modules = module_files(&files);
    let refs = collect_refs(&files, &modules);
    (refs, modules, files)
}

/// For people: `cargo test --test architecture -- --ignored --nocapture`
/// prints both graphs with the reference behind each edge.
#[test]
#[ignore]
fn print_graphs() {
    let (refs, modules, _) = graph_and_modules();
    let print = |title: &str, g: &Graph| {
        println!("{title}");
        for (from, tos) in g {
            for (to, evidence) in tos {
                println!("  {from} -> {to}  ({} references, first {})", evidence.len(), evidence[0]);
            }
        }
    };
    print("top-level modules", &top_level_graph(&refs));
    for (dir, g) in directory_graphs(&refs, &modules) {
        print(&rel(&dir), &g);
    }
}

#[test]
fn every_module_has_a_layer() {
    let (_, _, files) = graph_and_modules();
    let tops: BTreeSet<&str> = files.iter().filter_map(|f| f.module.first()).map(String::as_str).collect();
    let missing: Vec<_> = tops.iter().filter(|m| !LAYERS.iter().any(|(l, _)| l == *m)).collect();
    assert!(missing.is_empty(), "add these modules to LAYERS with the reason for their place: {missing:?}");
}

#[test]
fn top_level_edges_are_allowed() {
    let (refs, _, _) = graph_and_modules();
    let g = top_level_graph(&refs);
    let mut offences = Vec::new();
    for (from, tos) in &g {
        for (to, evidence) in tos {
            if !allowed(from).contains(&to.as_str()) {
                offences.push(format!("{from} -> {to}:\n    {}", evidence.join("\n    ")));
            }
        }
    }
    assert!(offences.is_empty(), "dependencies outside the allow-list (LAYERS):\n{}", offences.join("\n"));
}

#[test]
fn top_level_modules_have_no_cycles() {
    let (refs, _, _) = graph_and_modules();
    let g = top_level_graph(&refs);
    let found: Vec<_> = cycles(&g).iter().map(|c| describe_cycle(&g, c)).collect();
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn files_of_a_directory_have_no_cycles() {
    let (refs, modules, _) = graph_and_modules();
    let mut found = Vec::new();
    for (dir, g) in directory_graphs(&refs, &modules) {
        for c in cycles(&g) {
            found.push(format!("{}: {}", rel(&dir), describe_cycle(&g, &c)));
        }
    }
    assert!(found.is_empty(), "cycles between the files of a directory:\n{}", found.join("\n"));
}

/// The collector itself: each way of naming a module is seen, so a
/// dependency cannot slip past the checks above by its spelling.
#[test]
fn collector_sees_every_spelling() {
    let source = r#"
        use crate::a::{b::{self, C}, d as e, f::*};
        use super::sibling::Thing;
        use std::fs;
        fn f(x: crate::g::T) -> self::child::U {
            let _ = crate::h::call();
            println!("{}", crate::i::VALUE);
            crate::j::mac!();
            child::v();
            x
        }
        impl crate::k::Trait for super::super::l::Type {}
        mod inner { use super::super::m::N; }
    "#;
    let ast = syn::parse_file(source).unwrap();
    let module = vec!["top".to_owned(), "here".to_owned()];
    let mut modules: BTreeMap<Vec<String>, PathBuf> = BTreeMap::new();
    modules.insert(vec!["top".into(), "here".into(), "child".into()], PathBuf::new());
    let mut c = Collector {
        module,
        in_main: false,
        modules: &modules,
        file: Path::new("x.rs"),
        refs: Vec::new(),
        reexports: Vec::new(),
    };
    c.visit_file(&ast);
    let seen: BTreeSet<String> = c.refs.iter().map(|r| r.to.join("::")).collect();
    let want = [
        "a::b",
        "a::b::C",
        "a::d",
        "a::f",
        "top::sibling::Thing",
        "g::T",
        "top::here::child::U",
        "h::call",
        "i::VALUE",
        "j::mac",
        "top::here::child::v",
        "k::Trait",
        "l::Type",
        "top::m::N",
    ];
    for w in want {
        assert!(seen.contains(w), "missed {w}; saw {seen:?}");
    }
    assert!(!seen.iter().any(|s| s.contains("fs")), "std is not ours: {seen:?}");
}

/// The checks catch a cycle and name it as a path.
#[test]
fn a_cycle_is_named_as_a_path() {
    let mut g = Graph::new();
    add_edge(&mut g, "a", "b", "x".into());
    add_edge(&mut g, "b", "c", "x".into());
    add_edge(&mut g, "c", "a", "x".into());
    add_edge(&mut g, "c", "d", "x".into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c", "a"]]);
    add_edge(&mut g, "d", "d2", "x".into());
    assert_eq!(cycles(&g).len(), 1);
}
