//! Generates the registration of a [`Handler`]: the function unchanged, type
//! checks spanned on the user's tokens, and an `inventory` record.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::Handler;

pub(crate) fn registration(handler: &Handler) -> TokenStream {
    let function = &handler.function;
    let ident = &function.sig.ident;
    let name = ident.to_string();
    let path = &handler.path;
    let checks = argument_checks(handler);
    // Errors about the handler as a whole land on its return type, or its name.
    let handler_span = match &function.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => ident.span(),
    };
    let markers = handler_markers(handler);
    let erase = quote_spanned!(handler_span=> ::webmesh::__private::erase::<_, #markers>(#ident));
    let line = quote_spanned!(ident.span()=> ::core::line!());
    let kind = syn::Ident::new(handler.kind.variant(), proc_macro2::Span::call_site());

    quote! {
        #function

        const _: () = {
            #checks

            ::webmesh::__private::inventory::submit! {
                ::webmesh::__private::Registration::new(
                    ::webmesh::__private::RouteKind::#kind,
                    #path,
                    ::core::concat!(::core::module_path!(), "::", #name),
                    ::core::file!(),
                    #line,
                    || #erase,
                )
            }
        };
    }
}

/// The `T` of `Handler<T>`, as far as the syntax tells it. Pinning the reply
/// marker of a `Result` matters: a `Result` is also `Serialize`, and must not
/// travel as `{"Ok": ..}` when its error type is serializable too.
fn handler_markers(handler: &Handler) -> TokenStream {
    let flavour = match handler.function.sig.asyncness {
        Some(_) => quote!(::webmesh::marker::Async),
        None => quote!(_),
    };
    let reply = reply_marker(handler);
    let arguments = &handler.arguments;
    if arguments.is_empty() {
        quote!((#flavour, #reply))
    } else {
        quote!((#flavour, #reply, _, #(#arguments,)*))
    }
}

fn reply_marker(handler: &Handler) -> TokenStream {
    if handler.returns_result() {
        quote!(::webmesh::marker::ViaResult)
    } else {
        quote!(_)
    }
}

/// One check per argument and one for the return type, each spanned on the
/// user's type, so that a type that does not fit is reported there and not
/// on the macro.
fn argument_checks(handler: &Handler) -> TokenStream {
    let (leading, last) = match handler.arguments.split_last() {
        Some((last, leading)) => (leading, Some(last)),
        None => (&[][..], None),
    };
    let leading = leading.iter().map(|ty| {
        quote_spanned! {ty.span()=>
            __webmesh_parts::<#ty>();
        }
    });
    let last = last.map(|ty| {
        quote_spanned! {ty.span()=>
            __webmesh_last::<_, #ty>();
        }
    });
    // `impl Trait` cannot be named here; the handler check still covers it.
    let marker = reply_marker(handler);
    let reply = match &handler.function.sig.output {
        syn::ReturnType::Type(_, ty) if !matches!(**ty, syn::Type::ImplTrait(_)) => Some(quote_spanned! {ty.span()=>
            __webmesh_reply::<#marker, #ty>();
        }),
        _ => None,
    };
    quote! {
        #[allow(dead_code)]
        fn __webmesh_check_signature() {
            fn __webmesh_parts<T: ::webmesh::extract::FromCallParts>() {}
            fn __webmesh_last<M, T: ::webmesh::extract::FromCall<M>>() {}
            fn __webmesh_reply<M, T: ::webmesh::IntoReply<M>>() {}
            #(#leading)*
            #last
            #reply
        }
    }
}
