//! Parses and validates `#[webmesh::on("/path")] fn ...` into a [`Handler`].

use proc_macro2::TokenStream;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Type};

/// What a declaration answers, i.e. which attribute declared it.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Call,
    Subscribe,
    Publish,
}

impl Kind {
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Kind::Call => "on",
            Kind::Subscribe => "subscribe",
            Kind::Publish => "publish",
        }
    }

    pub(crate) fn variant(self) -> &'static str {
        match self {
            Kind::Call => "Call",
            Kind::Subscribe => "Subscribe",
            Kind::Publish => "Publish",
        }
    }
}

/// A validated handler declaration.
pub(crate) struct Handler {
    pub(crate) kind: Kind,
    pub(crate) path: LitStr,
    pub(crate) function: ItemFn,
    /// The types of the arguments, in order.
    pub(crate) arguments: Vec<Type>,
    /// The names of the path's parameters, in order (`{*rest}` is `rest`).
    pub(crate) parameters: Vec<String>,
}

impl Handler {
    pub(crate) fn parse(kind: Kind, attr: TokenStream, item: TokenStream) -> syn::Result<Self> {
        let path = parse_path(kind, attr)?;
        let function: ItemFn = syn::parse2(item)?;
        let arguments = validate_signature(&function)?;
        let parameters = parameters(&path.value());
        Ok(Handler { kind, path, function, arguments, parameters })
    }
}

impl Handler {
    /// Whether the return type is spelled `Result<..>` (any path ending so).
    pub(crate) fn returns_result(&self) -> bool {
        match &self.function.sig.output {
            syn::ReturnType::Type(_, ty) => match &**ty {
                Type::Path(path) => path.path.segments.last().is_some_and(|s| s.ident == "Result"),
                _ => false,
            },
            syn::ReturnType::Default => false,
        }
    }
}

fn parse_path(kind: Kind, attr: TokenStream) -> syn::Result<LitStr> {
    let attribute = kind.attribute();
    if attr.is_empty() {
        return Err(syn::Error::new(
            proc_macro2::Span::call_site(),
            format!("missing path: write `#[webmesh::{attribute}(\"/path\")]`"),
        ));
    }
    let path: LitStr = syn::parse2(attr.clone()).map_err(|_| {
        syn::Error::new_spanned(
            &attr,
            format!("expected the path as a string literal, e.g. `#[webmesh::{attribute}(\"/echo\")]`"),
        )
    })?;
    let value = path.value();
    if !value.starts_with('/') {
        return Err(syn::Error::new_spanned(&path, format!("paths must start with `/`: write \"/{value}\"")));
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(syn::Error::new_spanned(&path, format!("paths cannot contain {c:?}")));
    }
    validate_pattern(&value).map_err(|message| syn::Error::new_spanned(&path, message))?;
    Ok(path)
}

/// Checks the parameter syntax of a path pattern: `{name}` for one segment,
/// `{*name}` for the rest of the path, at most one parameter per segment.
fn validate_pattern(pattern: &str) -> Result<(), String> {
    let segments: Vec<&str> = pattern.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let mut rest = *segment;
        let mut params = 0;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("`}}` without `{{` in `{segment}`"));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| format!("`{{` without `}}` in `{segment}`"))?;
            let name = &after[..close];
            if name.contains('{') {
                return Err(format!("`{{` without `}}` in `{segment}`"));
            }
            let (catch_all, name) = match name.strip_prefix('*') {
                Some(name) => (true, name),
                None => (false, name),
            };
            if name.is_empty() {
                return Err(format!("a parameter needs a name, as in `{{id}}`: `{segment}`"));
            }
            if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(format!("parameter names are letters, digits and `_`: `{{{name}}}`"));
            }
            if catch_all && (i + 1 != segments.len() || *segment != format!("{{*{name}}}")) {
                return Err(format!("a catch-all `{{*{name}}}` must be the whole last segment"));
            }
            params += 1;
            if params > 1 {
                return Err(format!("only one parameter per segment: `{segment}`"));
            }
            rest = &after[close + 1..];
        }
    }
    Ok(())
}

/// The parameter names of a pattern that [`validate_pattern`] accepted.
fn parameters(pattern: &str) -> Vec<String> {
    pattern
        .split('/')
        .filter_map(|segment| {
            let open = segment.find('{')?;
            let close = segment[open..].find('}')? + open;
            Some(segment[open + 1..close].trim_start_matches('*').to_owned())
        })
        .collect()
}

fn validate_signature(function: &ItemFn) -> syn::Result<Vec<Type>> {
    let sig = &function.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "handlers cannot be generic: the server must know the argument and return types",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(variadic, "handlers cannot be variadic"));
    }
    sig.inputs
        .iter()
        .map(|input| match input {
            FnArg::Receiver(receiver) => Err(syn::Error::new_spanned(
                receiver,
                "handlers cannot take `self`: declare a free function and reach shared data through `webmesh::State`",
            )),
            FnArg::Typed(typed) => match &*typed.ty {
                Type::ImplTrait(ty) => Err(syn::Error::new_spanned(
                    ty,
                    "handlers cannot take `impl Trait` arguments: name a concrete type",
                )),
                ty => Ok(ty.clone()),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{parameters, validate_pattern};

    #[test]
    fn parameter_names() {
        assert!(parameters("/").is_empty());
        assert!(parameters("/jobs/queue").is_empty());
        assert_eq!(parameters("/users/{id}"), ["id"]);
        assert_eq!(parameters("/img/{name}.png/{*rest}"), ["name", "rest"]);
    }

    #[test]
    fn patterns() {
        for ok in ["/", "/echo", "/users/{id}", "/files/{*rest}", "/a/{b}/c/{d_2}", "/img/{name}.png"] {
            assert_eq!(validate_pattern(ok), Ok(()), "{ok}");
        }
        for (bad, error) in [
            ("/users/{id", "`{` without `}`"),
            ("/users/id}", "`}` without `{`"),
            ("/users/{}", "needs a name"),
            ("/users/{*}", "needs a name"),
            ("/files/{*rest}/more", "must be the whole last segment"),
            ("/a/{b}{c}", "only one parameter per segment"),
            ("/a/{b c}", "letters, digits"),
            ("/a/{{b}}", "`{` without `}`"),
        ] {
            let got = validate_pattern(bad).unwrap_err();
            assert!(got.contains(error), "{bad}: {got}");
        }
    }
}
