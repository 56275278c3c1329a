//! The breaker as a tower layer, so a client stack gets it like any other middleware. A call
//! while the breaker is open fails at once with [`BreakerError::Open`] without reaching the
//! inner service; `poll_ready` only reflects the inner service, because a tower readiness error
//! means the service is broken for good, which an open breaker is not.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{BreakerError, BreakerOpen, CallPermit, CircuitBreaker};

/// Wraps services in a [`BreakerService`]; `classify` says which results are failures.
#[derive(Clone)]
pub struct BreakerLayer<C> {
    breaker: CircuitBreaker,
    classify: C,
}

impl<C> BreakerLayer<C> {
    pub fn new(breaker: CircuitBreaker, classify: C) -> Self {
        Self { breaker, classify }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService { inner, breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

#[derive(Clone)]
pub struct BreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
}

impl<S, C> BreakerService<S, C> {
    pub fn new(inner: S, breaker: CircuitBreaker, classify: C) -> Self {
        Self { inner, breaker, classify }
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C, Request> Service<Request> for BreakerService<S, C>
where
    S: Service<Request>,
    C: Fn(&Result<S::Response, S::Error>) -> bool + Clone,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let state = match self.breaker.try_call() {
            Ok(permit) => State::Called {
                future: self.inner.call(request),
                permit: Some(permit),
                classify: self.classify.clone(),
            },
            Err(open) => State::Rejected { open },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The response of a [`BreakerService`]: the inner call, whose outcome it records, or the refusal.
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C> {
        Called { #[pin] future: F, permit: Option<CallPermit>, classify: C },
        Rejected { open: BreakerOpen },
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Fn(&Result<T, E>) -> bool,
{
    type Output = Result<T, BreakerError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future, permit, classify } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    if classify(&result) { permit.failure() } else { permit.success() }
                }
                Poll::Ready(result.map_err(BreakerError::Inner))
            }
            StateProj::Rejected { open } => Poll::Ready(Err(BreakerError::Open(open.clone()))),
        }
    }
}
