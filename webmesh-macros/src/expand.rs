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
    let erase = quote_spanned!(handler_span=> ::webmesh::__private::erase(#ident));
    let line = quote_spanned!(ident.span()=> ::core::line!());

    quote! {
        #function

        const _: () = {
            #checks

            ::webmesh::__private::inventory::submit! {
                ::webmesh::__private::Registration::new(
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

/// One check per argument, spanned on its type, so that a type that is not
/// an extractor is reported there and not on the macro.
fn argument_checks(handler: &Handler) -> TokenStream {
    let Some((last, leading)) = handler.arguments.split_last() else {
        return TokenStream::new();
    };
    let leading = leading.iter().map(|ty| {
        quote_spanned! {ty.span()=>
            __webmesh_parts::<#ty>();
        }
    });
    let last = quote_spanned! {last.span()=>
        __webmesh_last::<_, #last>();
    };
    quote! {
        #[allow(dead_code)]
        fn __webmesh_check_arguments() {
            fn __webmesh_parts<T: ::webmesh::extract::FromCallParts>() {}
            fn __webmesh_last<M, T: ::webmesh::extract::FromCall<M>>() {}
            #(#leading)*
            #last
        }
    }
}
