//! Fragment caching in minijinja templates: Django's `{% cache %}` tag as a function called
//! with `{% call %}`.
//!
//! ```jinja
//! {% call cache(500, "sidebar", user.name) %}
//!   <aside>{{ expensive_sidebar(user) }}</aside>
//! {% endcall %}
//! ```
//!
//! The arguments are Django's: the timeout in seconds (`none` keeps it forever), the
//! fragment's name, then any values it varies on. The key is [`fragment_key`] of the name and
//! the values' text, so code can invalidate the fragment with
//! `cache.delete(&fragment_key("sidebar", &[&user.name]))`.
//!
//! # Async cache, sync templates
//! minijinja renders synchronously; the cache is async. A template that uses `cache` is
//! rendered with [`render`], which runs the rendering on tokio's blocking pool: there, the
//! `cache` function waits for the cache on that thread, inside the runtime's context, while
//! the runtime's own threads drive its IO and timers. That is correct on either runtime
//! flavor, and never blocks a worker thread: waiting on a worker panics in tokio, and
//! `block_in_place` is refused by a current-thread runtime (the flavor of `#[tokio::test]`
//! and of many small services). A render costs one hand-off to the blocking pool; the
//! fragment's body renders only on a miss.
//!
//! Rendered any other way (a plain `template.render(...)`), `cache` fails with an error that
//! says to use [`render`]. [`block_on`] is the same bridge for your own template functions
//! that need async data, so an expensive query placed inside a cached fragment runs only when
//! the fragment is rendered, as Django's lazy querysets do.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use minijinja::{context, Environment};
//! use webcache::fragment::minijinja::{add_to, render};
//! use webcache::Cache;
//!
//! let mut env = Environment::new();
//! add_to(&mut env, Cache::locmem());
//! env.add_template("page.html", r#"{% call cache(60, "greeting", name) %}<b>{{ name }}</b>{% endcall %}"#)?;
//! let env = Arc::new(env);
//! let html = render(move || env.get_template("page.html")?.render(context! { name => "<alice>" })).await?;
//! assert_eq!(html, "<b>&lt;alice&gt;</b>");
//! # Ok(()) }
//! ```

use std::cell::RefCell;
use std::fmt::{self, Display};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use minijinja::value::{Kwargs, Rest, Value};
use minijinja::{Environment, Error as TemplateError, ErrorKind, State};
use tokio::runtime::Handle;
use webcache_core::{Cache, Error, Timeout};

use super::fragment_key;

thread_local! {
    /// The runtime that [`render`] runs this thread's rendering for; set only on the blocking
    /// thread, for the rendering's duration.
    static BRIDGE: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Sets [`BRIDGE`] for a rendering; puts back what was there when dropped (on panic too).
struct Bridge(Option<Handle>);

impl Bridge {
    fn enter(handle: Handle) -> Bridge {
        Bridge(BRIDGE.with(|b| b.replace(Some(handle))))
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let previous = self.0.take();
        BRIDGE.with(|b| *b.borrow_mut() = previous);
    }
}

/// Adds the `cache` function to `env`, storing fragments in `cache`.
pub fn add_to(env: &mut Environment<'_>, cache: Cache) {
    env.add_function(
        "cache",
        move |state: &State<'_, '_>,
              ttl: Value,
              name: String,
              vary_on: Rest<Value>,
              kwargs: Kwargs| {
            cached_call(&cache, state, &ttl, &name, &vary_on, &kwargs)
        },
    );
}

/// Runs `render` (a closure that renders with minijinja) on tokio's blocking pool, where the
/// `cache` function and [`block_on`] can wait for the cache. Call it from async code on any
/// tokio runtime.
pub async fn render<R, F>(render: F) -> Result<R, TemplateError>
where
    F: FnOnce() -> Result<R, TemplateError> + Send + 'static,
    R: Send + 'static,
{
    let handle = Handle::try_current().map_err(|e| {
        TemplateError::new(
            ErrorKind::InvalidOperation,
            "webcache::fragment::minijinja::render runs on a tokio runtime; call it from async code",
        )
        .with_source(e)
    })?;
    tokio::task::spawn_blocking(move || {
        let _bridge = Bridge::enter(handle);
        render()
    })
    .await
    .map_err(|e| {
        TemplateError::new(
            ErrorKind::InvalidOperation,
            "the template rendering panicked or was cancelled",
        )
        .with_source(e)
    })?
}

/// Waits for `future` from inside a rendering started by [`render`]: for template functions
/// that need async data. Outside such a rendering it is an error, never a panic or a stall.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, TemplateError> {
    let handle = BRIDGE.with(|b| b.borrow().clone()).ok_or_else(|| {
        TemplateError::new(
            ErrorKind::InvalidOperation,
            "this template uses the cache, which is async: render it with webcache::fragment::minijinja::render(|| template.render(ctx)).await",
        )
    })?;
    // Not `Handle::block_on` (nor `futures::executor::block_on`): a `cache` block that calls
    // a function using `block_on` nests one wait in another, which both refuse with a panic.
    // This wait nests; inside the runtime's context, the runtime's own threads drive its IO
    // and timers meanwhile, as they do for `Handle::block_on` from a blocking thread.
    let _context = handle.enter();
    Ok(wait(future))
}

/// Wakes one [`wait`]: its own flag, so a nested wait that takes the thread's unpark token
/// cannot make the outer one miss its wake-up.
struct ThreadWaker {
    thread: std::thread::Thread,
    woken: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Polls `future` on this thread, parking between wake-ups.
fn wait<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Arc::new(ThreadWaker {
        thread: std::thread::current(),
        woken: AtomicBool::new(false),
    });
    let as_waker = Waker::from(waker.clone());
    let mut cx = Context::from_waker(&as_waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        while !waker.woken.swap(false, Ordering::AcqRel) {
            std::thread::park();
        }
    }
}

/// A miss's rendering failed, or the cache did.
enum Failure {
    Cache(Error),
    Template(TemplateError),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Cache(e)
    }
}

impl Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Cache(e) => write!(f, "{e}"),
            Failure::Template(e) => write!(f, "{e}"),
        }
    }
}

fn cached_call(
    cache: &Cache,
    state: &State<'_, '_>,
    ttl: &Value,
    name: &str,
    vary_on: &[Value],
    kwargs: &Kwargs,
) -> Result<Value, TemplateError> {
    let caller: Value = kwargs.get("caller").map_err(|_| {
        TemplateError::new(
            ErrorKind::InvalidOperation,
            "`cache` wraps a block: write {% call cache(500, \"name\", vary_on...) %}...{% endcall %}",
        )
    })?;
    kwargs.assert_all_used()?;
    let ttl = timeout_of(ttl)?;
    let values: Vec<&dyn Display> = vary_on.iter().map(|v| v as &dyn Display).collect();
    let key = fragment_key(name, &values);
    let text = block_on(cache.try_get_or_set_with(&key, ttl, || async {
        caller
            .call(state, &[])
            .map(|v| v.to_string())
            .map_err(Failure::Template)
    }))?;
    match text {
        // The block's output is already escaped as the template escapes: keep it as is.
        Ok(text) => Ok(Value::from_safe_string(text)),
        Err(Failure::Template(e)) => Err(e),
        Err(Failure::Cache(e)) => Err(TemplateError::new(
            ErrorKind::InvalidOperation,
            format!("the cache failed for fragment `{name}`"),
        )
        .with_source(e)),
    }
}

/// The timeout argument: seconds (a number, or a string of one), or none/undefined for
/// "forever", as Django's `{% cache None ... %}`.
fn timeout_of(ttl: &Value) -> Result<Timeout, TemplateError> {
    if ttl.is_none() || ttl.is_undefined() {
        return Ok(Timeout::Forever);
    }
    let parsed = match ttl.as_str() {
        Some(text) => Timeout::parse(text),
        None => f64::try_from(ttl.clone())
            .ok()
            .and_then(Timeout::from_secs_f64),
    };
    parsed.ok_or_else(|| {
        TemplateError::new(
            ErrorKind::InvalidOperation,
            format!(
                "the fragment timeout `{ttl}` is not a number of seconds (or none for forever)"
            ),
        )
    })
}
