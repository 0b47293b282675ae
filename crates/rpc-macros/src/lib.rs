//! `#[interface(name = "…", version = N)]` on a trait generates, beside the trait:
//!
//! - `NAME` (the trait's name in SCREAMING_CASE): the [`warren_rpc::Interface`] it declares;
//! - `NameSkeleton<T>`: the server skeleton, a `warren_rpc::Dispatch` for any `T: Name`;
//! - `NameClient`: the client stub, one `async fn` per method over a `warren_rpc::Target`.
//!
//! Each method takes `&self`, optionally a `&Context` first (the call's deadline,
//! cancellation, exports and callbacks), then owned parameters that implement serde's traits;
//! it returns a value, or `Result<T, E>` whose `E` is the method's own error, typed on both
//! sides. `#[rpc(name = "sayHello", idempotent, since = 2)]` on a method gives its wire name
//! (default: the Rust name), declares it idempotent (clients may hedge and retry it), and the
//! interface version that added it (default 1).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Error, Expr, ExprLit, FnArg, GenericArgument, ItemTrait, Lit, Meta, PathArguments, ReturnType, Token, TraitItem,
    Type, parse_macro_input,
};

#[proc_macro_attribute]
pub fn interface(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut item = parse_macro_input!(item as ItemTrait);
    match expand(attr.into(), &mut item) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// One method, as the generated code needs it.
struct MethodSpec {
    ident: syn::Ident,
    wire: String,
    since: u32,
    idempotent: bool,
    takes_context: bool,
    params: Vec<(syn::Ident, Type)>,
    ok: Type,
    err: Option<Type>,
}

fn expand(attr: TokenStream2, item: &mut ItemTrait) -> syn::Result<TokenStream2> {
    let (name, version) = interface_args(attr, item)?;
    let mut methods = Vec::new();
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            methods.push(method_spec(f)?);
        }
    }
    if methods.iter().any(|m| m.since > version) {
        return Err(Error::new(item.ident.span(), "a method's `since` is above the interface's version"));
    }
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let info = format_ident!("{}", screaming(&trait_ident.to_string()));
    let skeleton = format_ident!("{}Skeleton", trait_ident);
    let client = format_ident!("{}Client", trait_ident);

    let method_infos = methods.iter().map(|m| {
        let (wire, since, idempotent) = (&m.wire, m.since, m.idempotent);
        quote! { ::warren_rpc::Method { name: #wire, since: #since, idempotent: #idempotent } }
    });
    let arms = methods.iter().map(dispatch_arm);
    let stubs = methods.iter().map(|m| stub(m, &info));
    let doc_info = format!("The `{name}` interface, version {version}, as `{trait_ident}` declares it.");
    let doc_skeleton = format!("The server skeleton of `{trait_ident}`: calls decoded and dispatched to a servant.");
    let doc_client = format!("The client stub of `{trait_ident}`: each method a remote call.");

    Ok(quote! {
        #item

        #[doc = #doc_info]
        #vis static #info: ::warren_rpc::Interface = ::warren_rpc::Interface {
            name: #name,
            version: #version,
            methods: &[#(#method_infos),*],
        };

        #[doc = #doc_skeleton]
        #[derive(Debug)]
        #vis struct #skeleton<T>(pub T);

        impl<T: #trait_ident> ::warren_rpc::Dispatch for #skeleton<T> {
            fn interface(&self) -> &'static ::warren_rpc::Interface {
                &#info
            }

            #[allow(unused_variables)]
            fn dispatch(
                &self,
                ctx: &::warren_rpc::Context,
                method: &str,
                codec: ::warren_rpc::Codec,
                args: &[u8],
            ) -> ::std::result::Result<::std::vec::Vec<u8>, ::warren_rpc::Failure> {
                match method {
                    #(#arms)*
                    _ => ::std::result::Result::Err(::warren_rpc::Failure::Rpc(::warren_rpc::RpcError::new(
                        ::warren_rpc::Code::NoSuchMethod,
                        ::std::format!("{} has no method {:?}", #name, method),
                    ))),
                }
            }
        }

        #[doc = #doc_client]
        #[derive(Clone, Debug)]
        #vis struct #client {
            target: ::warren_rpc::Target,
        }

        impl #client {
            pub fn new(target: ::warren_rpc::Target) -> Self {
                Self { target }
            }

            /// Where this stub's calls go.
            pub fn target(&self) -> &::warren_rpc::Target {
                &self.target
            }

            #(#stubs)*
        }
    })
}

/// `name = "…"` and `version = N`; the name defaults to the trait's.
fn interface_args(attr: TokenStream2, item: &ItemTrait) -> syn::Result<(String, u32)> {
    let mut name = item.ident.to_string();
    let mut version = 1u32;
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    for meta in metas {
        let Meta::NameValue(nv) = &meta else {
            return Err(Error::new(meta.span(), "expected `name = \"…\"` or `version = N`"));
        };
        if nv.path.is_ident("name") {
            name = lit_str(&nv.value)?;
        } else if nv.path.is_ident("version") {
            version = lit_int(&nv.value)?;
        } else {
            return Err(Error::new(nv.path.span(), "expected `name` or `version`"));
        }
    }
    if version == 0 {
        return Err(Error::new(Span::call_site(), "versions start at 1"));
    }
    Ok((name, version))
}

fn lit_str(expr: &Expr) -> syn::Result<String> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.value()),
        _ => Err(Error::new(expr.span(), "expected a string")),
    }
}

fn lit_int(expr: &Expr) -> syn::Result<u32> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse(),
        _ => Err(Error::new(expr.span(), "expected a number")),
    }
}

/// Read a method's signature and take its `#[rpc(…)]` attribute off.
fn method_spec(f: &mut syn::TraitItemFn) -> syn::Result<MethodSpec> {
    let sig = &f.sig;
    if sig.asyncness.is_some() || !sig.generics.params.is_empty() {
        return Err(Error::new(sig.span(), "interface methods are plain (not async, not generic) functions"));
    }
    let mut wire = sig.ident.to_string();
    let mut since = 1;
    let mut idempotent = false;
    let mut kept = Vec::new();
    for attr in f.attrs.drain(..) {
        if !attr.path().is_ident("rpc") {
            kept.push(attr);
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("idempotent") {
                idempotent = true;
            } else if meta.path.is_ident("name") {
                wire = meta.value()?.parse::<syn::LitStr>()?.value();
            } else if meta.path.is_ident("since") {
                since = meta.value()?.parse::<syn::LitInt>()?.base10_parse()?;
            } else {
                return Err(meta.error("expected `name = \"…\"`, `idempotent` or `since = N`"));
            }
            Ok(())
        })?;
    }
    f.attrs = kept;

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => return Err(Error::new(sig.span(), "interface methods take `&self`")),
    }
    let mut takes_context = false;
    let mut params = Vec::new();
    for (i, input) in inputs.enumerate() {
        let FnArg::Typed(pat) = input else { unreachable!("only the first input is a receiver") };
        if i == 0 && is_context(&pat.ty) {
            takes_context = true;
            continue;
        }
        if matches!(*pat.ty, Type::Reference(_)) {
            return Err(Error::new(pat.ty.span(), "parameters are owned values (decoded from the call)"));
        }
        let ident = match &*pat.pat {
            syn::Pat::Ident(p) => p.ident.clone(),
            other => return Err(Error::new(other.span(), "parameters are plain names")),
        };
        params.push((ident, (*pat.ty).clone()));
    }
    let (ok, err) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), None),
        ReturnType::Type(_, ty) => match result_parts(ty) {
            Some((ok, err)) => (ok, Some(err)),
            None => ((**ty).clone(), None),
        },
    };
    Ok(MethodSpec { ident: sig.ident.clone(), wire, since, idempotent, takes_context, params, ok, err })
}

/// `&Context` (any path ending in `Context`).
fn is_context(ty: &Type) -> bool {
    let Type::Reference(r) = ty else { return false };
    matches!(&*r.elem, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Context"))
}

/// `T` and `E` of `Result<T, E>`.
fn result_parts(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    Some((types.next()?, types.next()?))
}

fn dispatch_arm(m: &MethodSpec) -> TokenStream2 {
    let (ident, wire) = (&m.ident, &m.wire);
    let names: Vec<_> = m.params.iter().map(|(n, _)| n).collect();
    let types: Vec<_> = m.params.iter().map(|(_, t)| t).collect();
    let decode = if m.params.is_empty() {
        quote! { codec.expect_no_args(args, #wire)?; }
    } else {
        let count = m.params.len();
        quote! { let (#(#names,)*): (#(#types,)*) = codec.decode_args(args, #wire, #count)?; }
    };
    let ctx = m.takes_context.then(|| quote! { ctx, });
    let call = quote! { self.0.#ident(#ctx #(#names),*) };
    let answer = if m.err.is_some() {
        quote! {
            match #call {
                ::std::result::Result::Ok(value) => ::std::result::Result::Ok(codec.encode(&value)?),
                ::std::result::Result::Err(error) => {
                    ::std::result::Result::Err(::warren_rpc::Failure::App(codec.encode(&error)?))
                }
            }
        }
    } else {
        quote! { ::std::result::Result::Ok(codec.encode(&#call)?) }
    };
    quote! { #wire => { #decode #answer } }
}

fn stub(m: &MethodSpec, info: &syn::Ident) -> TokenStream2 {
    let (ident, wire, ok) = (&m.ident, &m.wire, &m.ok);
    let err = m.err.clone().unwrap_or_else(|| syn::parse_quote!(::warren_rpc::Never));
    let names: Vec<_> = m.params.iter().map(|(n, _)| n).collect();
    let types: Vec<_> = m.params.iter().map(|(_, t)| t).collect();
    let doc = format!("Call `{wire}` on the remote object.");
    quote! {
        #[doc = #doc]
        pub async fn #ident(&self, #(#names: #types),*) -> ::std::result::Result<#ok, ::warren_rpc::CallError<#err>> {
            self.target.call::<_, #ok, #err>(&#info, #wire, &(#(#names,)*)).await
        }
    }
}

/// `StringEnumerator` → `STRING_ENUMERATOR`.
fn screaming(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
