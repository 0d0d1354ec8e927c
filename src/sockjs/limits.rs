//! Admission limits for new sessions (total, per client address, per principal); the inbound
//! message-rate token bucket is `crate::limits`. Crossing a limit gets a clear answer: 503 at
//! admission, a close with 4429 for a client that sends too fast.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::limits::count_down;

/// Live-session counts of one service, checked when a session is created.
pub struct SessionLimiter {
    /// The configured maxima.
    max: Maxima,
    /// The live counts.
    counts: Mutex<Counts>,
}

/// The configured maxima; None is unlimited.
#[derive(Debug, Clone, Copy)]
pub struct Maxima {
    pub total: Option<usize>,
    pub per_ip: Option<usize>,
    pub per_principal: Option<usize>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_principal: HashMap<String, usize>,
}

/// Which limit refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitReached {
    #[error("too many sessions on this service")]
    Total,
    #[error("too many sessions from this address")]
    PerIp,
    #[error("too many sessions for this user")]
    PerPrincipal,
}

/// A counted session; dropping it releases the count.
pub struct Admission {
    /// The limiter to give the count back to.
    limiter: Arc<SessionLimiter>,
    /// The client address counted.
    ip: IpAddr,
    /// The principal counted, if any.
    principal: Option<String>,
}

impl SessionLimiter {
    /// A limiter with these maxima.
    pub fn new(max: Maxima) -> Arc<Self> {
        Arc::new(SessionLimiter {
            max,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a new session, or say which limit it would cross.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        principal: Option<&str>,
    ) -> Result<Admission, LimitReached> {
        let mut c = self.lock();
        if self.max.total.is_some_and(|m| c.total >= m) {
            return Err(LimitReached::Total);
        }
        if self
            .max
            .per_ip
            .is_some_and(|m| c.per_ip.get(&ip).copied().unwrap_or(0) >= m)
        {
            return Err(LimitReached::PerIp);
        }
        if let (Some(m), Some(p)) = (self.max.per_principal, principal)
            && c.per_principal.get(p).copied().unwrap_or(0) >= m
        {
            return Err(LimitReached::PerPrincipal);
        }
        c.total += 1;
        *c.per_ip.entry(ip).or_default() += 1;
        if let Some(p) = principal {
            *c.per_principal.entry(p.to_string()).or_default() += 1;
        }
        Ok(Admission {
            limiter: self.clone(),
            ip,
            principal: principal.map(str::to_string),
        })
    }

    /// Live sessions counted.
    pub fn total(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut c = self.limiter.lock();
        c.total = c.total.saturating_sub(1);
        count_down(&mut c.per_ip, &self.ip);
        if let Some(p) = &self.principal {
            count_down(&mut c.per_principal, p.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_are_counted_and_released() {
        let l = SessionLimiter::new(Maxima {
            total: Some(3),
            per_ip: Some(2),
            per_principal: Some(1),
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = l.admit(a, Some("u")).unwrap();
        assert_eq!(
            l.admit(a, Some("u")).err(),
            Some(LimitReached::PerPrincipal)
        );
        let _second = l.admit(a, None).unwrap();
        assert_eq!(l.admit(a, None).err(), Some(LimitReached::PerIp));
        let _third = l.admit(b, None).unwrap();
        assert_eq!(l.admit(b, None).err(), Some(LimitReached::Total));
        drop(first);
        assert!(l.admit(b, Some("u")).is_ok());
    }
}
