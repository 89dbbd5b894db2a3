//! `src/api/openapi.json` (served at `/openapi.json`) cannot drift from the
//! router:
//!
//! * every `.route("PATH", METHODS)` under `src/api` (read as syntax with
//!   `syn`, so a route split over lines or built by a closure counts) is in
//!   the document with exactly its methods, and every documented path is
//!   routed;
//! * one request per documented operation, through the in-process router,
//!   answers a status the document lists for that operation, with a
//!   Content-Type it lists for that status.
//!
//! A new route fails here with `route METHOD PATH is not in openapi.json`:
//! describe it there (parameters, body, every status it answers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use clap::Parser;
use http_body_util::BodyExt;
use serde_json::Value;
use syn::visit::{self, Visit};
use tower::ServiceExt;
use vinzclortho::cli::Cli;
use vinzclortho::node;
use vinzclortho::storage::MemoryStore;

const METHODS: &[&str] = &["get", "head", "put", "post", "delete", "patch", "options"];

fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("openapi.json is not JSON")
}

/// The methods routed on each path (`any` for `axum::routing::any`), with
/// axum's `{*rest}` written as OpenAPI's `{rest}`.
type Routes = BTreeMap<String, BTreeSet<String>>;

struct RouteVisitor<'a> {
    routes: &'a mut Routes,
    /// `let NAME = || ...` in the file: a route may be built by calling one.
    closures: BTreeMap<String, syn::Expr>,
}

/// The method routers an expression builds: `get(h)`, `axum::routing::post(h)`,
/// `.put(h)`, `any(h)`, and closures named in the file called inside it.
struct MethodVisitor<'a> {
    methods: BTreeSet<String>,
    closures: &'a BTreeMap<String, syn::Expr>,
}

fn is_method(name: &str) -> bool {
    METHODS.contains(&name) || name == "any"
}

impl<'ast> Visit<'ast> for MethodVisitor<'_> {
    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let syn::Expr::Path(path) = &*call.func
            && let Some(last) = path.path.segments.last()
        {
            let name = last.ident.to_string();
            if is_method(&name) {
                self.methods.insert(name.clone());
            }
            if call.args.is_empty()
                && path.path.segments.len() == 1
                && let Some(closure) = self.closures.get(&name)
            {
                self.visit_expr(closure);
            }
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let name = call.method.to_string();
        if is_method(&name) {
            self.methods.insert(name);
        }
        visit::visit_expr_method_call(self, call);
    }
}

impl<'ast> Visit<'ast> for RouteVisitor<'_> {
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        if call.method == "route"
            && call.args.len() == 2
            && let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(path), .. }) = &call.args[0]
        {
            let mut methods = MethodVisitor { methods: BTreeSet::new(), closures: &self.closures };
            methods.visit_expr(&call.args[1]);
            assert!(!methods.methods.is_empty(), "route {}: no method router found in its expression", path.value());
            let path = path.value().replace("{*", "{");
            self.routes.entry(path).or_default().extend(methods.methods);
        }
        visit::visit_expr_method_call(self, call);
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if let syn::Pat::Ident(name) = &local.pat
            && let Some(init) = &local.init
            && let syn::Expr::Closure(closure) = &*init.expr
        {
            self.closures.insert(name.ident.to_string(), (*closure.body).clone());
        }
        visit::visit_local(self, local);
    }
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

fn routes() -> Routes {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api"), &mut files);
    let mut routes = Routes::new();
    for file in files {
        let syntax = syn::parse_file(&std::fs::read_to_string(&file).unwrap()).unwrap();
        // Two passes: the closures first, wherever they are in the file.
        let mut closures = RouteVisitor { routes: &mut Routes::new(), closures: BTreeMap::new() };
        closures.visit_file(&syntax);
        let closures = closures.closures;
        RouteVisitor { routes: &mut routes, closures }.visit_file(&syntax);
    }
    routes
}

#[test]
fn every_route_is_documented_and_every_documented_path_is_routed() {
    let doc = document();
    assert_eq!(doc["openapi"].as_str().unwrap_or(""), "3.1.0");
    let routes = routes();
    assert!(routes.contains_key("/store/{key}") && routes.contains_key("/riak/{bucket}/{key}"), "{routes:?}");
    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item.as_object().unwrap().keys().filter(|m| METHODS.contains(&m.as_str())).cloned().collect();
            (path.clone(), methods)
        })
        .collect();
    let mut problems = Vec::new();
    for (path, methods) in &routes {
        let Some(doc_methods) = documented.get(path) else {
            problems.push(format!("route {} {path} is not in openapi.json", methods_text(methods)));
            continue;
        };
        if methods.contains("any") {
            // Every method reaches the handler; at least one is described.
            if doc_methods.is_empty() {
                problems.push(format!("route ANY {path}: openapi.json documents no method"));
            }
            continue;
        }
        for method in methods {
            if !doc_methods.contains(method) {
                problems.push(format!("route {} {path} is not in openapi.json", method.to_uppercase()));
            }
        }
        for method in doc_methods {
            // axum answers HEAD on every GET route.
            let routed = methods.contains(method) || (method == "head" && methods.contains("get"));
            if !routed {
                problems.push(format!("openapi.json documents {} {path}, which is not routed", method.to_uppercase()));
            }
        }
    }
    for path in documented.keys().filter(|p| !routes.contains_key(*p)) {
        problems.push(format!("openapi.json documents {path}, which is not routed"));
    }
    assert!(problems.is_empty(), "openapi.json and the router differ:\n{}", problems.join("\n"));
}

/// scripts/check-openapi leaves out what is marked `x-destructive`: these
/// change the cluster for good, and must stay marked.
#[test]
fn what_changes_the_cluster_for_good_is_marked_destructive() {
    let doc = document();
    for (method, path) in [
        ("post", "/admin/leave"),
        ("post", "/admin/force-remove"),
        ("post", "/admin/replace"),
        ("delete", "/admin/plan"),
        ("post", "/admin/commit"),
        ("put", "/admin/claim"),
        ("delete", "/admin/tokens/{name}"),
    ] {
        assert_eq!(doc["paths"][path][method]["x-destructive"], true, "{method} {path} is not marked x-destructive");
    }
}

fn methods_text(methods: &BTreeSet<String>) -> String {
    methods.iter().map(|m| m.to_uppercase()).collect::<Vec<_>>().join(",")
}

fn app() -> Router {
    let args = ["vinzclortho", "--storage", "memory"];
    let config = Cli::try_parse_from(args).unwrap().node.resolve().unwrap();
    let store = Arc::new(MemoryStore::new());
    node::build(&config, &node::Host::real(), "127.0.0.1:8880".into(), "127.0.0.1:9880".into(), store, None)
        .unwrap()
        .router
}

/// `#/components/...` references resolved.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("only local references");
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("dangling reference {reference}")))
        }
        None => value,
    }
}

/// The document's example for a path parameter: every one has one, so the
/// request reaches its handler.
fn example_uri(doc: &Value, path: &str, operation: &Value) -> String {
    let mut uri = path.to_owned();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let parameter = resolve(doc, parameter);
        if parameter["in"] == "path" {
            let name = parameter["name"].as_str().unwrap();
            let example =
                parameter["example"].as_str().unwrap_or_else(|| panic!("{path}: parameter {name} has no example"));
            uri = uri.replace(&format!("{{{name}}}"), example);
        }
    }
    assert!(!uri.contains('{'), "{path}: a path parameter is not described");
    uri
}

/// A body of the first media type the operation takes.
fn example_body(doc: &Value, operation: &Value) -> Option<(String, String)> {
    let body = resolve(doc, operation.get("requestBody")?);
    let (media, _) = body["content"].as_object()?.iter().next()?;
    let sample = match media.as_str() {
        "application/json" => "{}",
        "text/plain" => "1",
        _ => "value",
    };
    let media = if media == "*/*" { "text/plain" } else { media.as_str() };
    Some((media.to_owned(), sample.to_owned()))
}

fn media_matches(listed: &str, got: &str) -> bool {
    listed == "*/*" || listed == got
}

#[tokio::test]
async fn every_documented_operation_answers_a_documented_status() {
    let doc = document();
    let app = app();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                operations.push((path.clone(), method.clone(), operation.clone()));
            }
        }
    }
    // Whatever ends this node's membership goes last.
    operations.sort_by_key(|(path, method, _)| (path == "/admin/leave", method != "get", path.clone()));
    let mut problems = Vec::new();
    for (path, method, operation) in &operations {
        let uri = example_uri(&doc, path, operation);
        let mut request = Request::builder().method(method.to_uppercase().as_str()).uri(&uri);
        let body = match example_body(&doc, operation) {
            Some((media, body)) => {
                request = request.header("content-type", media);
                Body::from(body)
            }
            None => Body::empty(),
        };
        let response =
            tokio::time::timeout(std::time::Duration::from_secs(30), app.clone().oneshot(request.body(body).unwrap()))
                .await
                .unwrap_or_else(|_| panic!("{method} {uri}: no answer in 30 s"))
                .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().trim().to_owned());
        let text = String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes()).into_owned();
        let what = format!("{} {uri} ({path})", method.to_uppercase());
        let Some(documented) = operation["responses"].get(status.as_str()) else {
            let text: String = text.trim().chars().take(200).collect();
            problems.push(format!("{what}: status {status} is not in openapi.json: {text}"));
            continue;
        };
        let documented = resolve(&doc, documented);
        if let (Some(content), Some(got)) = (documented["content"].as_object(), &content_type)
            && method != "head"
            && !content.keys().any(|listed| media_matches(listed, got))
        {
            problems.push(format!(
                "{what}: {status} with Content-Type {got}, openapi.json lists {:?}",
                content.keys().collect::<Vec<_>>()
            ));
        }
    }
    assert!(problems.is_empty(), "answers openapi.json does not list:\n{}", problems.join("\n"));
}

#[tokio::test]
async fn the_document_is_served_open() {
    let response = app().oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let served: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(served, document(), "/openapi.json serves src/api/openapi.json");
}
