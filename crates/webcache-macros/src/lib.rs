//! The `#[cached]` attribute of [webcache](https://docs.rs/webcache). Use it as
//! `webcache::cached` (the `webcache` crate's `macros` feature, on by default): its expansion
//! names `::webcache`.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]

use std::collections::BTreeSet;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{
    Error, Expr, ExprLit, FnArg, GenericArgument, Ident, ItemFn, Lit, LitStr, Pat, PathArguments,
    Receiver, ReturnType, Type,
};

/// Memoizes an async function in a webcache [`Cache`]: the first call with some arguments runs
/// the body and stores its value; the next ones, in this process or any other sharing the
/// cache, get the stored value until it expires.
///
/// ```
/// use webcache::{cached, Caches};
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # struct Profile { id: u64 }
/// # #[derive(Debug)] struct AppError(String);
/// # impl From<webcache::Error> for AppError { fn from(e: webcache::Error) -> Self { AppError(e.to_string()) } }
/// # impl std::fmt::Display for AppError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.0) } }
/// # impl std::error::Error for AppError {}
/// # async fn load_profile(id: u64) -> Result<Profile, AppError> { Ok(Profile { id }) }
///
/// #[cached(ttl = 60, key = "user:{id}")]
/// async fn profile(#[cache] caches: &Caches, id: u64) -> Result<Profile, AppError> {
///     load_profile(id).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let caches = Caches::from_url("locmem://").await?;
/// let p = profile(&caches, 7).await?; // runs the body, stores under `user:7`
/// assert_eq!(profile(&caches, 7).await?, p); // from the cache
/// assert_eq!(profile_cached(&caches, 7).await?, Some(p)); // read, never compute
/// assert!(profile_invalidate(&caches, 7).await?); // forget it (true: it was there)
/// # Ok(()) }
/// ```
///
/// # Where the cache comes from
/// webcache has no process-global cache: an application builds its [`Caches`] once and hands
/// them around. So the attribute is told where the cache is, in one of two ways:
/// - `#[cache]` on an argument (a `Cache` or `Caches`, by value or behind `&`, `Arc`, ...):
///   the caller passes it, it is never part of the key. The usual form in an application whose
///   handlers already hold the caches.
/// - `cache = <expr>`: an expression evaluated on each call, in the function's scope: a static
///   (`cache = CACHES.get()` over a `OnceLock<Caches>`, `cache = *MEMO` over a
///   `LazyLock<Cache>`), or a field of an argument (`cache = self.cache`, `cache = state.caches`).
///   The function keeps its signature, as with the `cached` crate's statics.
///
/// From a `Caches`, the `default` alias is used unless `alias = "name"` says which.
///
/// # Options
/// - `ttl = 60`: how long a value is kept: seconds, a `Duration`, or a `Timeout`
///   (`Timeout::Forever`). Default: the cache's default timeout.
/// - `key = "user:{id}"`: the key, a template naming arguments (`{id}`, `{user.id}`,
///   `{self.tenant}`) that are formatted with `Display`; `{{` and `}}` are braces. The key is
///   exactly this (with the cache's prefix and version), so it can be read or deleted from
///   elsewhere, `webcache del user:7` included. Default: the function's path, `:`, and every
///   argument as a JSON array (`my_app::users::profile:[7]`), so each argument must be
///   `Serialize`; use types whose JSON is stable (a `BTreeMap`, not a `HashMap`, whose order
///   differs between processes).
/// - `skip(a, b)`: leave arguments out of the default key (a database handle, a logger).
/// - `name = "users::profile"`: the path part of the default key. Needed on methods (`self`),
///   whose path the attribute cannot see; useful to keep keys when moving a function.
/// - `cache = <expr>`, `alias = "name"`: see above.
/// - `cache_none`: for a function returning `Option<T>`, store `None` too (negative caching).
///   Without it a `None` is returned and not stored, so the next call runs the body again;
///   with `stale`, a background refresh that gives `None` is a failed refresh: the stale value
///   stays until its window ends.
/// - `stale = 600`: a stale window after the ttl, as
///   [`Cache::try_get_or_set_with_stale`]: a value past its ttl is returned at once while one
///   call refreshes it in the background. The body then runs in a spawned task, so it must be
///   `Send + 'static` (owned arguments, no `&self`), and a `Result`'s error `Display`.
/// - `tags = ["user:{id}", "users"]`: tags the stored value carries (templates like `key`);
///   `cache.invalidate_tags(["user:7"])` then forgets every value tagged `user:7`, in every
///   process, whatever its key (see `Cache::tagged`).
/// - `lock`: the body runs once across every process sharing the cache, not only once per
///   process: on a miss the call that takes the cache's lease computes, and the others (here
///   or elsewhere) wait for its value, as [`Cache::try_get_or_set_with_lock`]. For bodies
///   costly enough that a few processes must not run them at once; it costs two more backend
///   calls per miss. `stale` takes the lease anyway.
/// - `cache_errors`: for a function returning `Result`, store an `Err` too, so that the next
///   calls return it without running the body until it expires (for a lookup whose failure
///   is itself costly or rate-limited). The error type must then be `Serialize +
///   Deserialize`. Without it (the default) an `Err` is returned and never stored. Not with
///   `stale`, which keeps the last good value when a refresh fails.
/// - `error_ttl = 10`: with `cache_errors`, how long an error is kept (seconds, a `Duration`,
///   a `Timeout`); default: `ttl`.
///
/// # What the function returns, and what a failing cache does
/// - `Result<T, E>` (also `io::Result<T>`, `anyhow::Result<T>`): an `Err` is returned and not
///   stored (unless `cache_errors`). A cache failure is returned as the function's error, so
///   `E: From<webcache::Error>`, as with [`Cache::try_get_or_set_with`]; a cache configured
///   `on_error = "degrade"` turns backend failures into misses instead.
/// - `Option<T>` and `T`: there is no error to return, so a cache that fails is logged (one
///   warning per interval) and the call goes on without it, running the body at most once;
///   the value must be `Clone`, as a copy is kept for a store that fails after the body ran.
///
/// Values are stored as the cache stores every value (JSON), so `T: Serialize +
/// DeserializeOwned`. Concurrent calls with the same key in one process run the body once;
/// the others wait for its value (the cache's single flight); with `lock`, once across
/// processes.
///
/// # What else is generated
/// Next to `profile`, with its visibility, taking the receiver, the cache argument and the
/// key's arguments:
/// - `profile_cached(...) -> webcache::Result<Option<T>>`: the stored value, never computed
///   (with `cache_errors`, `Option<Result<T, E>>`: a stored error too).
/// - `profile_invalidate(...) -> webcache::Result<bool>`: deletes it; whether it was there.
///
/// # Mistakes caught at compile time
/// A template naming something that is not an argument (at the template), an argument that is
/// not `Serialize` in the default key (at its type), one that is not `Display` in a template
/// (at its name), a function that is not `async` (at `fn`), an error type that is not
/// `Serialize + Deserialize` with `cache_errors` (at the attribute), and unknown options.
///
/// [`Cache`]: https://docs.rs/webcache/latest/webcache/struct.Cache.html
/// [`Caches`]: https://docs.rs/webcache/latest/webcache/struct.Caches.html
/// [`Cache::try_get_or_set_with`]: https://docs.rs/webcache/latest/webcache/struct.Cache.html#method.try_get_or_set_with
/// [`Cache::try_get_or_set_with_stale`]: https://docs.rs/webcache/latest/webcache/struct.Cache.html#method.try_get_or_set_with_stale
/// [`Cache::try_get_or_set_with_lock`]: https://docs.rs/webcache/latest/webcache/struct.Cache.html#method.try_get_or_set_with_lock
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = match syn::parse::<ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(Tokens::from(item));
            return out.into();
        }
    };
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| options.parse(&meta));
    let expanded =
        syn::parse::Parser::parse(parser, attr).and_then(|()| expand(&options, func.clone()));
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            // The function stays (without the attribute's argument markers), so its callers
            // do not add errors of their own.
            let mut func = func;
            strip_cache_markers(&mut func);
            let mut out = e.to_compile_error();
            func.to_tokens(&mut out);
            out.into()
        }
    }
}

#[derive(Default)]
struct Options {
    ttl: Option<Expr>,
    key: Option<LitStr>,
    skip: Vec<Ident>,
    cache: Option<Expr>,
    alias: Option<LitStr>,
    name: Option<LitStr>,
    cache_none: Option<Span>,
    stale: Option<Expr>,
    tags: Vec<LitStr>,
    lock: Option<Span>,
    cache_errors: Option<Span>,
    error_ttl: Option<(Span, Expr)>,
}

impl Options {
    fn parse(&mut self, meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        let path = &meta.path;
        let once = |set: bool| {
            if set {
                Err(meta.error("this option is given twice"))
            } else {
                Ok(())
            }
        };
        if path.is_ident("ttl") {
            once(self.ttl.is_some())?;
            self.ttl = Some(meta.value()?.parse()?);
        } else if path.is_ident("key") {
            once(self.key.is_some())?;
            self.key = Some(meta.value()?.parse()?);
        } else if path.is_ident("skip") {
            meta.parse_nested_meta(|inner| match inner.path.get_ident() {
                Some(ident) => {
                    self.skip.push(ident.clone());
                    Ok(())
                }
                None => Err(inner.error("`skip(...)` lists argument names")),
            })?;
        } else if path.is_ident("cache") {
            once(self.cache.is_some())?;
            self.cache = Some(meta.value()?.parse()?);
        } else if path.is_ident("alias") {
            once(self.alias.is_some())?;
            self.alias = Some(meta.value()?.parse()?);
        } else if path.is_ident("name") {
            once(self.name.is_some())?;
            self.name = Some(meta.value()?.parse()?);
        } else if path.is_ident("cache_none") {
            once(self.cache_none.is_some())?;
            let on = if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::LitBool>()?.value
            } else {
                true
            };
            if on {
                self.cache_none = Some(path.span());
            }
        } else if path.is_ident("lock") {
            once(self.lock.is_some())?;
            self.lock = Some(path.span());
        } else if path.is_ident("cache_errors") {
            once(self.cache_errors.is_some())?;
            self.cache_errors = Some(path.span());
        } else if path.is_ident("error_ttl") {
            once(self.error_ttl.is_some())?;
            self.error_ttl = Some((path.span(), meta.value()?.parse()?));
        } else if path.is_ident("stale") {
            once(self.stale.is_some())?;
            self.stale = Some(meta.value()?.parse()?);
        } else if path.is_ident("tags") {
            once(!self.tags.is_empty())?;
            let input = meta.value()?;
            let content;
            syn::bracketed!(content in input);
            let tags =
                syn::punctuated::Punctuated::<LitStr, syn::Token![,]>::parse_terminated(&content)?;
            if tags.is_empty() {
                return Err(
                    meta.error("`tags = [...]` lists at least one tag, such as \"user:{id}\"")
                );
            }
            self.tags = tags.into_iter().collect();
        } else {
            return Err(meta.error(
                "unknown option; #[cached] takes ttl, key, skip(...), cache, alias, name, cache_none, stale, tags, lock, cache_errors, error_ttl",
            ));
        }
        Ok(())
    }
}

/// One argument of the function (not the receiver).
struct Arg {
    /// The name, when the pattern is a plain name (`id: u64`, `mut id: u64`).
    ident: Option<Ident>,
    ty: Type,
    /// The pattern's span, for errors about destructured arguments.
    pat_span: Span,
    is_cache: bool,
}

/// What the function returns, read from its signature.
enum Shape {
    /// `Result<T, E>` (or an alias with `T` first): the value is `T`.
    Result(Type),
    /// `Option<T>`: the value is `T`, or `Option<T>` with `cache_none`.
    Option(Type),
    /// Anything else: the value is the return type.
    Value(Type),
}

fn expand(options: &Options, mut func: ItemFn) -> syn::Result<Tokens> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span(),
            "#[cached] memoizes async functions: make this an `async fn`",
        ));
    }
    let ret =
        match &sig.output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            ReturnType::Default => return Err(Error::new(
                sig.ident.span(),
                "#[cached] needs a function that returns a value to cache; this one returns `()`",
            )),
        };
    if contains_impl_trait(&ret) {
        return Err(Error::new(
            ret.span(),
            "#[cached] stores a named type: the return type cannot be `impl Trait`",
        ));
    }
    let shape = shape_of(&ret);
    if let (Some(span), false) = (options.cache_none, matches!(shape, Shape::Option(_))) {
        return Err(Error::new(
            span,
            "`cache_none` is for functions returning `Option<T>`",
        ));
    }

    if let (Some(span), false) = (options.cache_errors, matches!(shape, Shape::Result(_))) {
        return Err(Error::new(
            span,
            "`cache_errors` is for functions returning `Result<T, E>`",
        ));
    }
    if let (Some((span, _)), None) = (&options.error_ttl, options.cache_errors) {
        return Err(Error::new(
            *span,
            "`error_ttl` is how long `cache_errors` keeps an error: add `cache_errors`",
        ));
    }
    if let (Some(span), Some(_)) = (options.cache_errors, &options.stale) {
        return Err(Error::new(
            span,
            "`cache_errors` does not go with `stale`: a stale value is kept when its refresh fails, and a stored error would replace it",
        ));
    }

    // The arguments, with `#[cache]` markers read and removed.
    let mut receiver: Option<Receiver> = None;
    let mut args = Vec::new();
    for input in func.sig.inputs.iter_mut() {
        match input {
            FnArg::Receiver(r) => receiver = Some(r.clone()),
            FnArg::Typed(typed) => {
                let before = typed.attrs.len();
                typed.attrs.retain(|a| !a.path().is_ident("cache"));
                let is_cache = typed.attrs.len() != before;
                let ident = match &*typed.pat {
                    Pat::Ident(p) if p.subpat.is_none() => Some(p.ident.clone()),
                    _ => None,
                };
                args.push(Arg {
                    ident,
                    ty: (*typed.ty).clone(),
                    pat_span: typed.pat.span(),
                    is_cache,
                });
            }
        }
    }
    let sig = &func.sig;
    let fn_name = &sig.ident;

    // The cache.
    let cache_args: Vec<&Arg> = args.iter().filter(|a| a.is_cache).collect();
    if cache_args.len() > 1 {
        return Err(Error::new(
            cache_args[1].pat_span,
            "only one argument can be marked #[cache]",
        ));
    }
    let cache_arg = cache_args.first().copied();
    let source = match (cache_arg, &options.cache) {
        (Some(arg), Some(expr)) => {
            let _ = arg;
            return Err(Error::new(
                expr.span(),
                "the cache is given twice: by `cache = ...` and by a #[cache] argument; keep one",
            ));
        }
        (Some(arg), None) => match &arg.ident {
            Some(ident) => ident.to_token_stream(),
            None => {
                return Err(Error::new(
                    arg.pat_span,
                    "the #[cache] argument needs a name (`caches: &Caches`), not a pattern",
                ))
            }
        },
        (None, Some(expr)) => expr.to_token_stream(),
        (None, None) => {
            return Err(Error::new(
                fn_name.span(),
                "#[cached] needs to know where the cache is: mark an argument #[cache] (a `&Cache` or `&Caches`), or give `cache = <expr>` (a static, `self.cache`, ...)",
            ))
        }
    };
    let alias = match &options.alias {
        Some(alias) => quote!(::core::option::Option::Some(#alias)),
        None => quote!(::core::option::Option::None),
    };
    let cache_expr = quote! {{
        #[allow(unused_imports)]
        use ::webcache::__private::CacheSource as _;
        (&(#source)).webcache_cache(#alias)
    }};

    // The key, and the arguments it uses.
    let names: Vec<&Ident> = args.iter().filter_map(|a| a.ident.as_ref()).collect();
    for skipped in &options.skip {
        if !names.contains(&skipped) {
            return Err(Error::new(
                skipped.span(),
                format!(
                    "`{skipped}` is not an argument of `{fn_name}`; its arguments are: {}",
                    list(&names)
                ),
            ));
        }
        if options.key.is_some() {
            return Err(Error::new(
                skipped.span(),
                "`skip` is for the default key; a `key` template already uses only the arguments it names",
            ));
        }
    }
    let path = match &options.name {
        Some(name) => name.to_token_stream(),
        None => {
            if options.key.is_none() {
                if let Some(r) = &receiver {
                    return Err(Error::new(
                        r.span(),
                        "a method's default key cannot tell which type it belongs to: give `name = \"Type::method\"` or a `key` template",
                    ));
                }
            }
            quote!(::core::concat!(
                ::core::module_path!(),
                "::",
                ::core::stringify!(#fn_name)
            ))
        }
    };
    let mut key_args: BTreeSet<String> = BTreeSet::new();
    let key_expr = match &options.key {
        Some(template) => {
            let format = formatted(
                template,
                "key template",
                &args,
                receiver.as_ref(),
                fn_name,
                &names,
                &mut key_args,
            )?;
            quote!(::core::result::Result::<::std::string::String, ::webcache::Error>::Ok(#format))
        }
        None => {
            let mut parts = Vec::new();
            for arg in args.iter().filter(|a| !a.is_cache) {
                let Some(ident) = &arg.ident else {
                    return Err(Error::new(
                        arg.pat_span,
                        "a destructured argument cannot be part of the default key: give it a name (`state: State<S>`) and `skip` it, or use a `key` template",
                    ));
                };
                if options.skip.contains(ident) {
                    continue;
                }
                key_args.insert(ident.to_string());
                let span = arg.ty.span();
                parts.push(quote_spanned!(span=> .arg(&#ident)));
            }
            quote!(::webcache::__private::KeyBuilder::new(#path) #(#parts)* .finish())
        }
    };

    // Arguments the `cache = <expr>` reads are taken by the generated siblings too.
    let mut used_by_cache = BTreeSet::new();
    if let Some(expr) = &options.cache {
        idents_in(expr.to_token_stream(), &mut used_by_cache);
    }

    let ttl = match &options.ttl {
        Some(ttl) => quote!(::webcache::Timeout::from(#ttl)),
        None => quote!(::webcache::Timeout::Default),
    };
    let stale = options.stale.as_ref().map(|expr| match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(n), ..
        }) => quote!(::std::time::Duration::from_secs(#n)),
        Expr::Lit(ExprLit {
            lit: Lit::Float(n), ..
        }) => quote!(::std::time::Duration::from_secs_f64(#n)),
        other => other.to_token_stream(),
    });
    let get_or_set = |closure: Tokens| match &stale {
        Some(stale) => {
            quote!(__wc_cache.try_get_or_set_with_stale(&__wc_key, #ttl, #stale, #closure).await)
        }
        // One computation across processes, by the cache's lease (the stale family takes it
        // anyway).
        None if options.lock.is_some() => {
            quote!(__wc_cache.try_get_or_set_with_lock(&__wc_key, #ttl, #closure).await)
        }
        None => quote!(__wc_cache.try_get_or_set_with(&__wc_key, #ttl, #closure).await),
    };

    let block = &func.block;
    let ret_span = ret.span();
    let body = quote!(::webcache::__private::typed::<#ret, _>(async move #block));
    // Tags: the value is written through `cache.tagged([...])`, so `invalidate_tags` with any
    // of them forgets it. Reads need no tags (the entry records them), nor do the siblings.
    let mut tags = Vec::new();
    for tag in &options.tags {
        let mut read = BTreeSet::new();
        tags.push(formatted(
            tag,
            "tag",
            &args,
            receiver.as_ref(),
            fn_name,
            &names,
            &mut read,
        )?);
    }
    let tagged = (!tags.is_empty()).then(|| {
        quote! {
            let __wc_cache = __wc_cache.map(|c| c.tagged([#(#tags),*]));
        }
    });
    let prelude = quote! {
        let __wc_key: ::core::result::Result<::std::string::String, ::webcache::Error> = #key_expr;
        let __wc_cache: ::core::result::Result<::webcache::Cache, ::webcache::Error> = #cache_expr;
        #tagged
    };
    let cache_none = options.cache_none.is_some();
    // `cache_errors`: the stored value is `Result<T, StoredError>`; the error type's
    // `Serialize + Deserialize` is required here, at the option.
    let error_codec = options.cache_errors.map(|span| {
        quote_spanned!(span=> ::webcache::__private::ErrorCodec::new(::core::marker::PhantomData::<#ret>))
    });
    // A `Result` function: the cache failure converted into its error, and the cache and key,
    // or that error returned.
    let into_error = quote_spanned!(ret_span=> ::core::convert::From::from(__wc_e));
    let open_or_fail = quote! {
        let (__wc_cache, __wc_key) = match (__wc_cache, __wc_key) {
            (::core::result::Result::Ok(c), ::core::result::Result::Ok(k)) => (c, k),
            (::core::result::Result::Err(__wc_e), _) | (_, ::core::result::Result::Err(__wc_e)) => {
                return ::core::result::Result::Err(#into_error);
            }
        };
    };
    let new_body = match &shape {
        Shape::Result(_) if error_codec.is_some() => {
            let call = get_or_set(quote! {
                move || async move {
                    match __wc_body.await {
                        ::core::result::Result::Ok(v) => ::core::result::Result::Ok(::core::result::Result::Ok(v)),
                        ::core::result::Result::Err(e) => match __wc_errors.encode(&e) {
                            ::core::option::Option::Some(stored) => {
                                __wc_computed_error.store(true, ::std::sync::atomic::Ordering::Relaxed);
                                ::core::result::Result::Ok(::core::result::Result::Err(stored))
                            }
                            ::core::option::Option::None => ::core::result::Result::Err(::webcache::__private::Fail::Body(e)),
                        },
                    }
                }
            });
            let keep_error = options.error_ttl.as_ref().map(|(_, error_ttl)| {
                quote! {
                    if __wc_computed_error.load(::std::sync::atomic::Ordering::Relaxed) {
                        ::webcache::__private::keep_error_for(&__wc_cache, &__wc_key, ::webcache::Timeout::from(#error_ttl)).await;
                    }
                }
            });
            quote! {{
                #prelude
                let __wc_body = #body;
                let __wc_errors = #error_codec;
                #open_or_fail
                // Whether this call ran the body and stored its error (not read one stored).
                let __wc_computed_error = &::std::sync::atomic::AtomicBool::new(false);
                match #call {
                    ::core::result::Result::Ok(::core::result::Result::Ok(v)) => ::core::result::Result::Ok(v),
                    ::core::result::Result::Ok(::core::result::Result::Err(stored)) => {
                        #keep_error
                        match __wc_errors.decode(&__wc_cache, &__wc_key, stored).await {
                            ::core::result::Result::Ok(e) => ::core::result::Result::Err(e),
                            ::core::result::Result::Err(__wc_e) => ::core::result::Result::Err(#into_error),
                        }
                    }
                    ::core::result::Result::Err(::webcache::__private::Fail::Body(e)) => ::core::result::Result::Err(e),
                    ::core::result::Result::Err(::webcache::__private::Fail::Cache(__wc_e)) => {
                        ::core::result::Result::Err(#into_error)
                    }
                }
            }}
        }
        Shape::Result(_) => {
            let call = get_or_set(quote! {
                move || async move { __wc_body.await.map_err(::webcache::__private::Fail::Body) }
            });
            quote! {{
                #prelude
                let __wc_body = #body;
                #open_or_fail
                match #call {
                    ::core::result::Result::Ok(v) => ::core::result::Result::Ok(v),
                    ::core::result::Result::Err(::webcache::__private::Fail::Body(e)) => ::core::result::Result::Err(e),
                    ::core::result::Result::Err(::webcache::__private::Fail::Cache(__wc_e)) => {
                        ::core::result::Result::Err(#into_error)
                    }
                }
            }}
        }
        Shape::Option(_) if !cache_none => {
            let call = get_or_set(quote! {
                move || async move {
                    match __wc_compute.run().await {
                        ::core::option::Option::Some(v) => ::core::result::Result::Ok(v),
                        ::core::option::Option::None => ::core::result::Result::Err(
                            ::webcache::__private::Fail::Body(::webcache::__private::NotStored),
                        ),
                    }
                }
            });
            once_body(
                &prelude,
                &body,
                &path,
                ret_span,
                &call,
                &quote!(::core::option::Option::Some(v)),
                &quote! {
                    ::core::result::Result::Err(::webcache::__private::Fail::Body(::webcache::__private::NotStored)) => ::core::option::Option::None,
                },
            )
        }
        Shape::Option(_) | Shape::Value(_) => {
            let call = get_or_set(quote! {
                move || async move {
                    ::core::result::Result::<_, ::webcache::__private::Fail<::webcache::__private::Never>>::Ok(
                        __wc_compute.run().await,
                    )
                }
            });
            once_body(
                &prelude,
                &body,
                &path,
                ret_span,
                &call,
                &quote!(v),
                &quote! {
                    ::core::result::Result::Err(::webcache::__private::Fail::Body(never)) => match never {},
                },
            )
        }
    };
    let stored = match &shape {
        Shape::Result(t) | Shape::Value(t) => t.clone(),
        Shape::Option(t) if cache_none => syn::parse_quote!(::core::option::Option<#t>),
        Shape::Option(t) => t.clone(),
    };

    // The siblings: `_cached` and `_invalidate`, over the receiver, the cache and the key.
    let mut sibling_inputs: Vec<Tokens> = Vec::new();
    if let Some(r) = &receiver {
        let (reference, mutability) = (&r.reference, &r.mutability);
        let self_token = &r.self_token;
        match reference {
            Some((and, lifetime)) => {
                sibling_inputs.push(quote!(#and #lifetime #mutability #self_token))
            }
            None => sibling_inputs.push(quote!(#self_token)),
        }
    }
    for arg in &args {
        let Some(ident) = &arg.ident else { continue };
        let name = ident.to_string();
        if arg.is_cache || key_args.contains(&name) || used_by_cache.contains(&name) {
            let ty = &arg.ty;
            sibling_inputs.push(quote!(#ident: #ty));
        }
    }
    let vis = &func.vis;
    let generics = &func.sig.generics;
    let where_clause = &func.sig.generics.where_clause;
    let cached_name = format_ident!("{}_cached", fn_name);
    let invalidate_name = format_ident!("{}_invalidate", fn_name);
    let cached_doc = format!(
        "The value [`{fn_name}`] stored for these arguments, if any; never runs it. Generated by `#[cached]`."
    );
    let invalidate_doc = format!(
        "Deletes the value [`{fn_name}`] stored for these arguments; returns whether one was there. Generated by `#[cached]`."
    );
    // With `cache_errors` the stored value is a `Result`, and an error is read back as one.
    let read_stored = match &error_codec {
        Some(codec) => quote! {
            let __wc_errors = #codec;
            let __wc_key = __wc_key?;
            match __wc_cache?.get::<::core::result::Result<#stored, ::webcache::__private::StoredError>>(&__wc_key).await? {
                ::core::option::Option::None => ::core::result::Result::Ok(::core::option::Option::None),
                ::core::option::Option::Some(::core::result::Result::Ok(v)) => {
                    ::core::result::Result::Ok(::core::option::Option::Some(::core::result::Result::Ok(v)))
                }
                ::core::option::Option::Some(::core::result::Result::Err(stored)) => __wc_errors
                    .decode_read(&__wc_key, stored)
                    .map(|e| ::core::option::Option::Some(::core::result::Result::Err(e))),
            }
        },
        None => quote!(__wc_cache?.get::<#stored>(&__wc_key?).await),
    };
    let read_type = match &error_codec {
        Some(_) => ret.to_token_stream(),
        None => stored.to_token_stream(),
    };
    let siblings = quote! {
        #[doc = #cached_doc]
        #[allow(dead_code, clippy::needless_lifetimes)]
        #vis async fn #cached_name #generics (#(#sibling_inputs),*) -> ::webcache::Result<::core::option::Option<#read_type>> #where_clause {
            let __wc_key: ::core::result::Result<::std::string::String, ::webcache::Error> = #key_expr;
            let __wc_cache: ::core::result::Result<::webcache::Cache, ::webcache::Error> = #cache_expr;
            #read_stored
        }

        #[doc = #invalidate_doc]
        #[allow(dead_code, clippy::needless_lifetimes)]
        #vis async fn #invalidate_name #generics (#(#sibling_inputs),*) -> ::webcache::Result<bool> #where_clause {
            let __wc_key: ::core::result::Result<::std::string::String, ::webcache::Error> = #key_expr;
            let __wc_cache: ::core::result::Result<::webcache::Cache, ::webcache::Error> = #cache_expr;
            __wc_cache?.delete(&__wc_key?).await
        }
    };

    func.block = syn::parse2(new_body)?;
    Ok(quote! {
        #func
        #siblings
    })
}

/// The expansion for a function without an error to return: the body is held by a `Once`, run
/// by the cache on a miss, or by the call when the cache failed.
fn once_body(
    prelude: &Tokens,
    body: &Tokens,
    path: &Tokens,
    ret_span: Span,
    call: &Tokens,
    ok: &Tokens,
    body_arm: &Tokens,
) -> Tokens {
    let once = quote_spanned!(ret_span=> ::webcache::__private::Once::new(#body));
    quote! {{
        #prelude
        let __wc_once = #once;
        let (__wc_cache, __wc_key) = match (__wc_cache, __wc_key) {
            (::core::result::Result::Ok(c), ::core::result::Result::Ok(k)) => (c, k),
            (::core::result::Result::Err(__wc_e), _) | (_, ::core::result::Result::Err(__wc_e)) => {
                return __wc_once.without_cache(#path, &__wc_e).await;
            }
        };
        let __wc_compute = __wc_once.clone();
        match #call {
            ::core::result::Result::Ok(v) => #ok,
            #body_arm
            ::core::result::Result::Err(::webcache::__private::Fail::Cache(__wc_e)) => {
                __wc_once.without_cache(#path, &__wc_e).await
            }
        }
    }}
}

/// `format!(...)` of a template naming arguments (`{id}`, `{user.id}`, `{self.tenant}`): each
/// value at its argument's span, so one that is not `Display` is reported there. The arguments
/// it names go into `used`.
fn formatted(
    template: &LitStr,
    what: &str,
    args: &[Arg],
    receiver: Option<&Receiver>,
    fn_name: &Ident,
    names: &[&Ident],
    used: &mut BTreeSet<String>,
) -> syn::Result<Tokens> {
    let mut format = String::new();
    let mut values = Vec::new();
    for part in parse_template(template)? {
        match part {
            Part::Text(text) => format.push_str(&text.replace('{', "{{").replace('}', "}}")),
            Part::Field(fields) => {
                let root = &fields[0];
                let span = if root == "self" {
                    match receiver {
                        Some(r) => r.self_token.span,
                        None => {
                            return Err(Error::new(
                                template.span(),
                                format!("the {what} names `self`, but `{fn_name}` is not a method"),
                            ))
                        }
                    }
                } else {
                    match args.iter().find(|a| a.ident.as_ref().is_some_and(|i| i == root)) {
                        Some(arg) if arg.is_cache => {
                            return Err(Error::new(
                                template.span(),
                                format!("the {what} names `{root}`, the #[cache] argument; name the arguments the value depends on"),
                            ))
                        }
                        Some(arg) => {
                            used.insert(root.clone());
                            arg.ident.as_ref().map_or(template.span(), Ident::span)
                        }
                        None => {
                            return Err(Error::new(
                                template.span(),
                                format!(
                                    "the {what} names `{{{}}}`, but `{fn_name}` has no argument `{root}`; its arguments are: {}",
                                    fields.join("."),
                                    list(names)
                                ),
                            ))
                        }
                    }
                };
                let idents = fields.iter().map(|f| Ident::new(f, span));
                values.push(quote_spanned!(span=> &#(#idents).*));
                format.push_str("{}");
            }
        }
    }
    Ok(quote!(::std::format!(#format, #(#values),*)))
}

fn shape_of(ret: &Type) -> Shape {
    if let Type::Path(path) = ret {
        if path.qself.is_none() {
            if let Some(last) = path.path.segments.last() {
                if let PathArguments::AngleBracketed(generic) = &last.arguments {
                    let first = generic.args.iter().find_map(|a| match a {
                        GenericArgument::Type(t) => Some(t.clone()),
                        _ => None,
                    });
                    if let Some(first) = first {
                        if last.ident == "Result" {
                            return Shape::Result(first);
                        }
                        if last.ident == "Option" && generic.args.len() == 1 {
                            return Shape::Option(first);
                        }
                    }
                }
            }
        }
    }
    Shape::Value(ret.clone())
}

fn contains_impl_trait(ty: &Type) -> bool {
    let mut found = false;
    fn walk(tokens: Tokens, found: &mut bool) {
        for tt in tokens {
            match tt {
                TokenTree::Ident(i) if i == "impl" => *found = true,
                TokenTree::Group(g) => walk(g.stream(), found),
                _ => {}
            }
        }
    }
    walk(ty.to_token_stream(), &mut found);
    found
}

/// Every identifier in `tokens` (to find the arguments a `cache = <expr>` reads).
fn idents_in(tokens: Tokens, out: &mut BTreeSet<String>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) => {
                out.insert(i.to_string());
            }
            TokenTree::Group(g) => idents_in(g.stream(), out),
            _ => {}
        }
    }
}

fn list(names: &[&Ident]) -> String {
    if names.is_empty() {
        return "(none)".to_owned();
    }
    names
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn strip_cache_markers(func: &mut ItemFn) {
    for input in func.sig.inputs.iter_mut() {
        if let FnArg::Typed(typed) = input {
            typed.attrs.retain(|a| !a.path().is_ident("cache"));
        }
    }
}

/// A piece of a key template.
#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    /// `{a.b.c}`: an argument (or `self`) and fields of it.
    Field(Vec<String>),
}

fn parse_template(template: &LitStr) -> syn::Result<Vec<Part>> {
    parse_template_str(&template.value()).map_err(|msg| Error::new(template.span(), msg))
}

fn parse_template_str(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err(
                    "a `}` in the key template closes nothing; write `}}` for a brace".to_owned(),
                )
            }
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => inner.push(c),
                        None => {
                            return Err(format!(
                                "`{{{inner}` in the key template is not closed; write `{{name}}`, or `{{{{` for a brace"
                            ))
                        }
                    }
                }
                let fields: Vec<String> = inner
                    .trim()
                    .split('.')
                    .map(|f| f.trim().to_owned())
                    .collect();
                if fields.iter().any(|f| !is_ident(f)) {
                    return Err(format!(
                        "`{{{inner}}}` in the key template is not an argument name (`{{id}}`) or a field of one (`{{user.id}}`)"
                    ));
                }
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Field(fields));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(parts)
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && s != "_"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_into_text_and_fields() {
        assert_eq!(
            parse_template_str("user:{id}:{ user.name }{{x}}").unwrap(),
            [
                Part::Text("user:".into()),
                Part::Field(vec!["id".into()]),
                Part::Text(":".into()),
                Part::Field(vec!["user".into(), "name".into()]),
                Part::Text("{x}".into()),
            ]
        );
        for bad in ["{", "}", "{}", "{a b}", "{1}", "{a.}", "{_}", "x{a"] {
            assert!(parse_template_str(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any text either parses into literal text and identifier paths that spell the
        /// template again, or is refused; nothing panics.
        #[test]
        fn templates_parse_or_are_refused(text in "[a-z{}. :_0-9]{0,24}") {
            if let Ok(parts) = parse_template_str(&text) {
                let mut again = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => again.push_str(&t.replace('{', "{{").replace('}', "}}")),
                        Part::Field(fields) => {
                            proptest::prop_assert!(fields.iter().all(|f| is_ident(f)));
                            again.push('{');
                            again.push_str(&fields.join("."));
                            again.push('}');
                        }
                    }
                }
                let strip = |s: &str| s.replace(' ', "");
                proptest::prop_assert_eq!(strip(&again), strip(&text));
            }
        }
    }
}
