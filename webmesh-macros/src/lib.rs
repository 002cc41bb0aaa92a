//! Procedural macros of [webmesh](https://docs.rs/webmesh). Use them through
//! the `webmesh` crate (`#[webmesh::on("/path")]`); the generated code names
//! only `::webmesh` paths.

mod expand;
mod model;

use proc_macro::TokenStream;

/// Declares a webmesh handler. See `webmesh::on`.
#[proc_macro_attribute]
pub fn on(attr: TokenStream, item: TokenStream) -> TokenStream {
    declare(model::Kind::Call, attr, item)
}

/// Declares who may subscribe to a topic. See `webmesh::subscribe`.
#[proc_macro_attribute]
pub fn subscribe(attr: TokenStream, item: TokenStream) -> TokenStream {
    declare(model::Kind::Subscribe, attr, item)
}

/// Declares which topics clients may publish to. See `webmesh::publish`.
#[proc_macro_attribute]
pub fn publish(attr: TokenStream, item: TokenStream) -> TokenStream {
    declare(model::Kind::Publish, attr, item)
}

fn declare(kind: model::Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match model::Handler::parse(kind, attr.into(), item.clone()) {
        Ok(handler) => expand::registration(&handler).into(),
        // Keep the function as written beside the error, so that
        // completion and other diagnostics still work on it.
        Err(error) => {
            let error = error.to_compile_error();
            quote::quote!(#item #error).into()
        }
    }
}
