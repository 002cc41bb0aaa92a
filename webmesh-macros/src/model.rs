//! Parses and validates `#[webmesh::on("/path")] fn ...` into a [`Handler`].

use proc_macro2::TokenStream;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Type};

/// A validated handler declaration.
pub(crate) struct Handler {
    pub(crate) path: LitStr,
    pub(crate) function: ItemFn,
    /// The types of the arguments, in order.
    pub(crate) arguments: Vec<Type>,
}

impl Handler {
    pub(crate) fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<Self> {
        let path = parse_path(attr)?;
        let function: ItemFn = syn::parse2(item)?;
        let arguments = validate_signature(&function)?;
        Ok(Handler { path, function, arguments })
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

fn parse_path(attr: TokenStream) -> syn::Result<LitStr> {
    if attr.is_empty() {
        return Err(syn::Error::new(proc_macro2::Span::call_site(), "missing path: write `#[webmesh::on(\"/path\")]`"));
    }
    let path: LitStr = syn::parse2(attr.clone()).map_err(|_| {
        syn::Error::new_spanned(&attr, "expected the path as a string literal, e.g. `#[webmesh::on(\"/echo\")]`")
    })?;
    let value = path.value();
    if !value.starts_with('/') {
        return Err(syn::Error::new_spanned(&path, format!("paths must start with `/`: write \"/{value}\"")));
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(syn::Error::new_spanned(&path, format!("paths cannot contain {c:?}")));
    }
    Ok(path)
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
