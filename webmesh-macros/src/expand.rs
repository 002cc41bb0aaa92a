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
    let path_checks = path_checks(handler);
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
            #path_checks

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

/// Checks that each [`Path`] argument fits the route's parameters: none on a
/// route without parameters, and a tuple of the right size.
///
/// The check is on types, not spelling, so that it holds through renames
/// and aliases and leaves other types named `Path` alone: a probe has an
/// inherent method for `webmesh::extract::Path<T>`, which method lookup
/// prefers to the trait method every other type has; its bound names a
/// trait nothing implements, whose message is the error.
///
/// [`Path`]: https://docs.rs/webmesh/latest/webmesh/extract/struct.Path.html
fn path_checks(handler: &Handler) -> TokenStream {
    // The route goes into diagnostic messages, where braces are format syntax.
    let route = handler.path.value().replace('{', "{{").replace('}', "}}");
    let count = handler.parameters.len();
    let checks = handler.arguments.iter().filter_map(|ty| match (count, tuple_size(ty)) {
        (0, _) => Some(probe(
            ty,
            &format!("`Path` extracts the route's parameters, and `{route}` has none"),
            "no parameters to extract",
            "add a parameter to the route, as in `/users/{{id}}`, or remove this argument",
        )),
        (n, Some(size)) if size != n => {
            let names = handler.parameters.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ");
            Some(probe(
                ty,
                &format!("this `Path` takes {size} parameter{}, and `{route}` has {n}: {names}", plural(size)),
                &match n {
                    1 => "one parameter: write `Path<T>`".to_owned(),
                    n => format!("expected a tuple of {n}"),
                },
                "the tuple's elements are the route's parameters, in order",
            ))
        }
        _ => None,
    });
    quote! {
        #[allow(dead_code)]
        fn __webmesh_check_path() {
            #(#checks)*
        }
    }
}

/// A block that fails to compile, with `message`, if `ty` is webmesh's `Path`.
fn probe(ty: &syn::Type, message: &str, label: &str, note: &str) -> TokenStream {
    let call = quote_spanned! {ty.span()=>
        __WebmeshProbe::<#ty>(::core::marker::PhantomData).__webmesh_path();
    };
    quote! {{
        struct __WebmeshProbe<T: ?::core::marker::Sized>(::core::marker::PhantomData<T>);
        #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
        trait __WebmeshPathFits {}
        // One implementation, so that the compiler does not suggest adding one.
        #[diagnostic::do_not_recommend]
        impl __WebmeshPathFits for __WebmeshProbe<()> {}
        trait __WebmeshNotPath {
            fn __webmesh_path(&self) {}
        }
        impl<T: ?::core::marker::Sized> __WebmeshNotPath for __WebmeshProbe<T> {}
        impl<T> __WebmeshProbe<::webmesh::extract::Path<T>> {
            fn __webmesh_path(&self)
            where
                T: __WebmeshPathFits,
            {
            }
        }
        #call
    }}
}

/// The size of `(A, B, ..)` in a type spelled `Path<(A, B, ..)>`.
fn tuple_size(ty: &syn::Type) -> Option<usize> {
    let syn::Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(arguments) = &last.arguments else { return None };
    match arguments.args.first()? {
        syn::GenericArgument::Type(syn::Type::Tuple(tuple)) if last.ident == "Path" => Some(tuple.elems.len()),
        _ => None,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
