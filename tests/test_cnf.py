"""genode.ode.cnf_log_likelihood against a linear vector field, where everything is exact.

For f(x, t) = A x on [t0, t1]: x(t1) = e^{A(t1−t0)} x and ∫∇·f dt = tr(A)(t1 − t0), so
log p(x) = log p_prior(e^{A(t1−t0)} x) + tr(A)(t1 − t0) (FFJORD eq. 4). With A = A0 + θA1
the gradient w.r.t. θ of the closed form is exact too (autodiff through `expm`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from genode import ode

T0, T1 = 0.0, 1.5
A0 = np.array([[-0.5, 0.3, 0.0], [0.1, -0.2, 0.4], [0.0, -0.3, 0.1]])
A1 = np.array([[0.2, 0.0, 0.1], [0.0, -0.1, 0.0], [0.3, 0.0, 0.2]])


def _linear(theta, x, t):
  """f(x, t) = A(θ)x, A(θ) = A0 + θA1, batched: x (B, 3)."""
  del t
  return x @ (A0 + theta * A1).T


def _prior(z):
  return ode.gaussian_log_prob(z, 1.0)


def _closed_form(theta, x):
  a = A0 + theta * A1
  z = x @ jax.scipy.linalg.expm(a * (T1 - T0)).T
  return _prior(z) + jnp.trace(a) * (T1 - T0), z


def _x():
  return jax.random.normal(jax.random.key(0), (4, 3), jnp.float64)


def _counting(theta):
  calls = []

  def drift(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return _linear(theta, x, t)

  return drift, calls


def test_exact_trace_is_the_closed_form(x64):
  x = _x()
  drift, calls = _counting(0.3)
  logp, info = ode.cnf_log_likelihood(drift, x, T0, T1, _prior, rtol=1e-10, atol=1e-10)
  jax.effects_barrier()
  expected, z = _closed_form(0.3, x)
  np.testing.assert_allclose(logp, expected, rtol=0, atol=1e-8)
  np.testing.assert_allclose(info.latent, z, rtol=0, atol=1e-8)
  np.testing.assert_allclose(info.delta_logp, np.trace(A0 + 0.3 * A1) * (T1 - T0), atol=1e-9)
  np.testing.assert_allclose(info.prior_logp, _prior(z), atol=1e-8)
  assert int(info.nfe) == len(calls) and info.num_probes == 0


@pytest.mark.parametrize("solver, num_steps, nfe", [("tsit5", 8, 1 + 6 * 8),
                                                    ("heun", 64, 2 * 64),
                                                    ("euler", 16, 16)])
def test_fixed_step_solve_counts_and_converges(x64, solver, num_steps, nfe):
  x = _x()
  drift, calls = _counting(0.3)
  logp, info = ode.cnf_log_likelihood(drift, x, T0, T1, _prior, solver=solver,
                                      num_steps=num_steps)
  jax.effects_barrier()
  assert int(info.nfe) == len(calls) == nfe and int(info.num_steps) == num_steps
  # tr(A) is constant, so Δlogp is exact at any step size; x(t1) carries the error.
  np.testing.assert_allclose(info.delta_logp, np.trace(A0 + 0.3 * A1) * (T1 - T0), rtol=1e-12)
  tolerance = {"tsit5": 1e-6, "heun": 1e-3, "euler": 0.1}[solver]
  np.testing.assert_allclose(logp, _closed_form(0.3, x)[0], rtol=0, atol=tolerance)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_for_the_exact_trace(x64, probe):
  x = _x()
  num_probes = 512
  drift = Partial(_linear, 0.3)
  logp, info = ode.cnf_log_likelihood(drift, x, T0, T1, _prior, trace="hutchinson",
                                      key=jax.random.key(1), num_probes=num_probes,
                                      probe=probe, rtol=1e-8, atol=1e-8)
  exact, _ = _closed_form(0.3, x)
  assert info.num_probes == num_probes and info.stderr.shape == (4,)
  assert np.all(info.stderr > 1e-3)  # A is not diagonal: the estimate has variance
  assert np.all(np.abs(logp - exact) <= 4 * info.stderr), (logp - exact) / info.stderr


def test_one_rademacher_probe_is_exact_for_a_diagonal_jacobian(x64):
  x = _x()
  diag = lambda x, t: x * jnp.asarray([[-0.4, 0.2, 0.7]])  # noqa: E731
  logp, info = ode.cnf_log_likelihood(diag, x, T0, T1, _prior, trace="hutchinson",
                                      key=jax.random.key(2), rtol=1e-10, atol=1e-10)
  np.testing.assert_allclose(info.delta_logp, 0.5 * (T1 - T0), rtol=1e-10)
  assert info.stderr is None


def test_exact_divergence_above_64_dimensions(x64):
  """d = 100 > the JVP batch of 64: the trace of a dense Jacobian, per sample."""
  w = jax.random.normal(jax.random.key(3), (100, 100), jnp.float64) / 10
  fn = lambda x: jnp.tanh(x @ w.T)  # noqa: E731
  x = jax.random.normal(jax.random.key(4), (3, 100), jnp.float64)
  value, div = ode.exact_divergence(fn, x)
  expected = [jnp.trace(jax.jacfwd(lambda v: jnp.tanh(w @ v))(xi)) for xi in x]
  np.testing.assert_allclose(value, fn(x), rtol=1e-14)
  np.testing.assert_allclose(div, expected, rtol=1e-12)


def test_rnode_integrals_of_a_linear_field_are_the_closed_form(x64):
  """RNODE's ∫‖f‖² dt and ∫‖∇f‖_F² dt for f = A x: ‖A‖_F²(t1 − t0) exactly (the exact
  trace's JVPs; one Rademacher probe's ‖Aε‖² averaged over probes: unbiased), and
  ∫‖A e^{A(t−t0)} x‖² dt by Simpson's rule on a fine grid. Δlogp and z are unchanged."""
  x = _x()
  a = A0 + 0.3 * A1
  drift = Partial(_linear, 0.3)
  logp, info = ode.cnf_log_likelihood(drift, x, T0, T1, _prior, rtol=1e-10, atol=1e-10,
                                      regularize=True)
  ts = np.linspace(T0, T1, 2001)
  speeds = np.stack([np.sum((x @ (a @ jax.scipy.linalg.expm(a * (t - T0))).T) ** 2, -1)
                     for t in ts])
  h = ts[1] - ts[0]
  kinetic = h / 3 * (speeds[0] + speeds[-1] + 4 * speeds[1:-1:2].sum(0)
                     + 2 * speeds[2:-1:2].sum(0))
  np.testing.assert_allclose(info.kinetic, kinetic, rtol=1e-8)
  np.testing.assert_allclose(info.jacobian_frobenius, np.sum(a**2) * (T1 - T0), rtol=1e-9)
  plain, plain_info = ode.cnf_log_likelihood(drift, x, T0, T1, _prior, rtol=1e-10,
                                             atol=1e-10)
  np.testing.assert_allclose(logp, plain, atol=1e-8)
  assert plain_info.kinetic is None and plain_info.jacobian_frobenius is None
  # Hutchinson: ‖Aε‖² per probe; its probe mean is unbiased for ‖A‖_F²(t1 − t0).
  num_probes = 2000
  _, hutch = ode.cnf_log_likelihood(drift, x, T0, T1, _prior, trace="hutchinson",
                                    key=jax.random.key(5), num_probes=num_probes,
                                    num_steps=4, solver="tsit5", regularize=True)
  probes = jax.random.rademacher(jax.random.key(5), (num_probes,) + x.shape, x.dtype)
  per_probe = np.sum((probes @ a.T) ** 2, -1) * (T1 - T0)  # (K, B): the same estimates
  np.testing.assert_allclose(hutch.jacobian_frobenius, per_probe.mean(0), rtol=1e-10)
  stderr = per_probe.std(0, ddof=1) / np.sqrt(num_probes)
  assert np.all(stderr > 1e-3)  # A is not diagonal: ‖Aε‖² varies with ε
  assert np.all(np.abs(hutch.jacobian_frobenius - np.sum(a**2) * (T1 - T0)) <= 4 * stderr)


@pytest.mark.parametrize("adjoint", ["recursive_checkpoint", "backsolve", "direct"])
def test_gradient_through_the_solve_matches_finite_differences(x64, adjoint):
  x, theta, h = _x(), 0.3, 1e-5

  def loss(theta):
    logp, _ = ode.cnf_log_likelihood(Partial(_linear, theta), x, T0, T1, _prior, rtol=1e-10,
                                     atol=1e-10, max_steps=256, adjoint=adjoint)
    return jnp.sum(logp)

  closed = lambda th: jnp.sum(_closed_form(th, x)[0])  # noqa: E731
  finite_difference = (closed(theta + h) - closed(theta - h)) / (2 * h)
  grad = jax.grad(loss)(theta)
  np.testing.assert_allclose(grad, finite_difference, rtol=1e-6)
  np.testing.assert_allclose(grad, jax.grad(closed)(theta), rtol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(adjoint="implicit"), r"Unknown adjoint 'implicit'.*'backsolve'"),
    (dict(solver="heun"), r"Unknown solver 'heun'; valid: \['tsit5', 'dopri5'\]"),
    (dict(solver="rk4", num_steps=4), r"Unknown solver 'rk4'.*'euler'"),
    (dict(solver="euler", num_steps=0), "num_steps must be a positive integer"),
    (dict(t1=T0), "t0 ≠ t1"),
    (dict(trace="hutchinson"), "needs a PRNG `key`"),
])
def test_bad_input(kwargs, match):
  args = dict(t0=T0, t1=T1)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    ode.cnf_log_likelihood(Partial(_linear, 0.3), jnp.zeros((1, 3)), args.pop("t0"),
                           args.pop("t1"), _prior, **args)


@pytest.mark.parametrize("adjoint", ["recursive_checkpoint", "backsolve"])
def test_gradient_through_a_fixed_step_hutchinson_solve(x64, adjoint):
  """FFJORD's training set-up: fixed steps, one Rademacher probe. For a diagonal A(θ) one
  probe is exact (ε_i² = 1), so the gradient is the closed form's, up to Tsit5's error."""
  x, theta = _x(), 0.3
  d0, d1 = jnp.asarray([-0.4, 0.2, 0.7]), jnp.asarray([0.5, -0.3, 0.1])

  def drift(theta, x, t):
    del t
    return x * (d0 + theta * d1)[None]

  def loss(theta):
    logp, _ = ode.cnf_log_likelihood(Partial(drift, theta), x, T0, T1, _prior,
                                     trace="hutchinson", key=jax.random.key(5), solver="tsit5",
                                     num_steps=16, adjoint=adjoint)
    return jnp.sum(logp)

  def closed(theta):
    a = d0 + theta * d1
    z = x * jnp.exp(a * (T1 - T0))[None]
    return jnp.sum(_prior(z) + jnp.sum(a) * (T1 - T0))

  np.testing.assert_allclose(loss(theta), closed(theta), rtol=1e-7)
  np.testing.assert_allclose(jax.grad(loss)(theta), jax.grad(closed)(theta), rtol=1e-6)
