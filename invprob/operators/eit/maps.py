"""Forward maps in the log-conductivity ``theta = log sigma`` (per cell) for the EIT posteriors.

- :class:`LogConductivityForward`: ``F(theta) = EIT.A(exp(theta))``, the full nonlinear complete electrode model
  (absolute imaging); its Jacobian is ``J_sigma diag(sigma)``.
- :class:`LinearizedForward`: ``F(theta) = F(theta_0) + J (theta - theta_0)`` about a reference ``theta_0``
  (difference imaging, and the linear-Gaussian test case).

Both are pure torch on top of an :class:`~invprob.operators.eit.EIT` operator; the posterior that uses them is
:class:`invprob.eit_posterior.EITPosterior`.
"""

from __future__ import annotations

import torch

__all__ = ["LinearizedForward", "LogConductivityForward"]


class LogConductivityForward:
    """``theta (B, n_cells) -> EIT.A(exp(theta)) (B, n_meas)``: differentiable through the EIT torch bridge.

    Parameters
    ----------
    operator : invprob.operators.eit.EIT
    max_abs_theta : float
        Guard: ``|theta| <= max_abs_theta`` (conductivities within ``exp(+-max_abs_theta)``), else ``ValueError``.
    """

    is_linear = False

    def __init__(self, operator, *, max_abs_theta: float = 30.0):
        for a in ("A", "A_vjp", "jacobian", "n_cells", "n_meas"):
            if not hasattr(operator, a):
                raise ValueError(f"operator must be an EIT operator (missing {a!r}), got {type(operator).__name__}")
        self.operator = operator
        self.max_abs_theta = float(max_abs_theta)

    @property
    def n_cells(self) -> int:
        return int(self.operator.n_cells)

    @property
    def n_meas(self) -> int:
        return int(self.operator.n_meas)

    def _check(self, theta):
        if not bool(torch.isfinite(theta).all()) or float(theta.detach().abs().max()) > self.max_abs_theta:
            raise ValueError(f"theta (log-conductivity) must be finite with |theta| <= {self.max_abs_theta}")

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        self._check(theta)
        return self.operator.A(theta.exp())

    def vjp(self, theta: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``J_theta^T r = sigma * (J_sigma^T r)`` (adjoint method, batched)."""
        self._check(theta)
        s = theta.exp()
        return s * self.operator.A_vjp(s, r)

    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        """``(n_meas, n_cells)`` Jacobian with respect to ``theta`` at one field ``theta`` (n_cells,)."""
        self._check(theta)
        s = theta.detach().reshape(-1).to(torch.float64).exp()
        return self.operator.jacobian(s) * s[None, :]


class LinearizedForward:
    """``F(theta) = f0 + J (theta - theta0)`` (difference imaging, and the Gaussian test case).

    Parameters
    ----------
    jacobian : torch.Tensor (n_meas, n_cells)
    f0 : torch.Tensor (n_meas,)
    theta0 : torch.Tensor (n_cells,)
    """

    is_linear = True

    def __init__(self, jacobian: torch.Tensor, f0: torch.Tensor, theta0: torch.Tensor):
        J = torch.as_tensor(jacobian, dtype=torch.float64)
        if J.ndim != 2:
            raise ValueError(f"jacobian must be (n_meas, n_cells), got shape {tuple(J.shape)}")
        f0 = torch.as_tensor(f0, dtype=torch.float64).reshape(-1)
        theta0 = torch.as_tensor(theta0, dtype=torch.float64).reshape(-1)
        if f0.shape[0] != J.shape[0] or theta0.shape[0] != J.shape[1]:
            raise ValueError(f"f0 ({f0.shape[0]}) and theta0 ({theta0.shape[0]}) must match jacobian {tuple(J.shape)}")
        self.J, self.f0, self.theta0 = J, f0, theta0

    @classmethod
    def at(cls, forward: LogConductivityForward, theta0: torch.Tensor) -> LinearizedForward:
        """Linearise a :class:`LogConductivityForward` about ``theta0``."""
        theta0 = torch.as_tensor(theta0, dtype=torch.float64).reshape(1, -1)
        return cls(forward.jacobian(theta0[0]), forward(theta0)[0].detach(), theta0[0])

    @property
    def n_cells(self) -> int:
        return int(self.J.shape[1])

    @property
    def n_meas(self) -> int:
        return int(self.J.shape[0])

    def __call__(self, theta):
        J = self.J.to(theta)
        return self.f0.to(theta) + (theta - self.theta0.to(theta)) @ J.T

    def vjp(self, theta, r):
        return r @ self.J.to(r)

    def jacobian(self, theta=None):
        return self.J
