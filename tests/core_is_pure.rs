//! `src/core` holds the rules of the system as pure functions: no runtime,
//! no network, no disk, no clock, no randomness. This test fails when code
//! there names any of them. It reads the files as syntax trees (`syn`), not
//! lines: every `use` tree is flattened (`use std::{fs, io::Read}` names
//! `std::fs` and `std::io::Read`), and every path is seen wherever it is
//! written (types, expressions, patterns, macro calls and their arguments).
//! Comments and strings are not code, so they may name anything.

use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

/// Entries with `::` forbid a path prefix (`std::io` forbids `std::io` and
/// `std::io::Read`, not `std::iox`); the others forbid a name anywhere in a
/// path (`tokio::spawn`, `Instant`, `x::SystemTime::now`).
const FORBIDDEN: &[&str] = &[
    "tokio",
    "tonic",
    "axum",
    "hyper",
    "rocksdb",
    "std::time",
    "SystemTime",
    "Instant",
    "rand::",
    "std::fs",
    "std::net",
    "std::thread",
    "std::env",
    "std::io",
    "std::process",
    "tracing",
];

fn forbidden(path: &[String]) -> Option<&'static str> {
    FORBIDDEN.iter().copied().find(|word| {
        if word.contains("::") {
            let prefix: Vec<&str> = word.split("::").filter(|s| !s.is_empty()).collect();
            path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
        } else {
            path.iter().any(|segment| segment == word)
        }
    })
}

/// Every path a file names, with its line.
#[derive(Default)]
struct Paths {
    found: Vec<(Vec<String>, usize)>,
}

impl Paths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        let mut leaf = |prefix: &mut Vec<String>, ident: &syn::Ident| {
            let mut path = prefix.clone();
            if ident != "self" {
                path.push(ident.to_string());
            }
            self.found.push((path, ident.span().start().line));
        };
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => leaf(prefix, &n.ident),
            syn::UseTree::Rename(r) => leaf(prefix, &r.ident),
            syn::UseTree::Glob(g) => self.found.push((prefix.clone(), g.star_token.span.start().line)),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
        }
    }

    /// Macro arguments are tokens to syn: every `a::b::c` run in them.
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
                TokenTree::Ident(first) => {
                    let mut path = vec![first.to_string()];
                    while is_colons(i + 1) {
                        let Some(TokenTree::Ident(next)) = tokens.get(i + 3) else { break };
                        path.push(next.to_string());
                        i += 3;
                    }
                    self.found.push((path, first.span().start().line));
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_item_extern_crate(&mut self, e: &'ast syn::ItemExternCrate) {
        self.found.push((vec![e.ident.to_string()], e.ident.span().start().line));
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let path = p.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = p.segments.first().map_or(0, |s| s.ident.span().start().line);
        self.found.push((path, line));
        visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        visit::visit_macro(self, m);
        self.tokens(m.tokens.clone());
    }
}

fn offences(file: &str, source: &str) -> Vec<String> {
    let ast = syn::parse_file(source).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut paths = Paths::default();
    paths.visit_file(&ast);
    paths
        .found
        .iter()
        .filter_map(|(path, line)| forbidden(path).map(|word| format!("{file}:{line}: {word}: {}", path.join("::"))))
        .collect()
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

#[test]
fn core_names_no_io() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core"), &mut files);
    assert!(files.len() >= 5, "found {files:?}");
    let mut found = Vec::new();
    for file in &files {
        found.extend(offences(&file.display().to_string(), &std::fs::read_to_string(file).unwrap()));
    }
    assert!(found.is_empty(), "core must stay pure:\n{}", found.join("\n"));
}

/// Each way of naming something forbidden is caught; words in comments,
/// strings and longer names are not.
#[test]
fn every_spelling_is_caught() {
    for source in [
        "use std::{fs, collections::HashMap};",
        "use std::{io::{self, Read}};",
        "use std::time as t;",
        "use std::thread::*;",
        "fn f() { let _ = ::std::env::var(\"x\"); }",
        "fn f() -> tokio::task::JoinHandle<()> { todo!() }",
        "struct S { at: Instant }",
        "fn f() { let _ = SystemTime::now(); }",
        "fn f() { tracing::info!(\"x\"); }",
        "fn f() { println!(\"{:?}\", std::process::id()); }",
        "fn f() { assert!(rand::random::<bool>()); }",
        "impl From<rocksdb::Error> for E { fn from(_: rocksdb::Error) -> E { E } }",
        "extern crate hyper;",
    ] {
        assert!(!offences("test.rs", source).is_empty(), "missed: {source}");
    }
    for source in [
        "// tokio, std::fs and Instant in a comment",
        "/// Unlike tokio, this waits for nothing.\nfn f() {}",
        "const S: &str = \"std::time::Instant\";",
        "use std::collections::BTreeMap; use core::fmt;",
        "fn instant_of(x: u64) -> u64 { x }",
        "use crate::core::ring::Ring; fn f(r: Ring) { let _ = r; }",
    ] {
        assert_eq!(offences("test.rs", source), Vec::<String>::new(), "false alarm: {source}");
    }
}
