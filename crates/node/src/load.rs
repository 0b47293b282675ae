//! What both config formats share: collecting built services and the checks across services.

use std::collections::HashSet;

use crate::attrs::{Attrs, Built, Format, build};
use crate::config::{Config, Logging, RegistryLink, Service, StatusAddr};

/// A config that cannot be loaded, with the file and line at fault.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct LoadError {
    /// The file.
    pub file: String,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Services collected so far.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    services: Vec<Service>,
    pub(crate) ignored: Vec<String>,
    disabled: Vec<String>,
}

impl Loaded {
    /// Build the section `name` and keep it; an internal service this node lacks is an error.
    pub(crate) fn add(&mut self, name: &str, attrs: &Attrs, defaults: &Attrs, format: Format) -> Result<(), String> {
        match build(name, attrs, defaults, format)? {
            Built::Service(service) => self.services.push(*service),
            Built::Disabled(id) => self.disabled.push(id),
            Built::NoSuchInternal(_, message) => return Err(message),
        }
        Ok(())
    }

    /// The services kept so far.
    pub(crate) fn services(&self) -> &[Service] {
        &self.services
    }

    /// Keep a built service.
    pub(crate) fn push(&mut self, service: Service) {
        self.services.push(service);
    }

    /// Name a service that is present but not served.
    pub(crate) fn disable(&mut self, id: String) {
        self.disabled.push(id);
    }

    /// Check ids and listeners are unique, and make the config.
    pub(crate) fn finish(self, status: Option<StatusAddr>) -> Result<Config, String> {
        let mut ids = HashSet::new();
        let mut listens = HashSet::new();
        for service in &self.services {
            if !ids.insert(&service.name) {
                return Err(format!("two services are called {:?} (set id to tell them apart)", service.name));
            }
            if service.listen.addr.port() != 0 && !listens.insert(service.listen) {
                return Err(format!(
                    "service {:?}: {} {} is already another service's",
                    service.name,
                    service.listen.transport.name(),
                    service.listen.addr
                ));
            }
        }
        Ok(Config {
            services: self.services,
            status,
            ignored: self.ignored,
            disabled: self.disabled,
            registry: Some(RegistryLink::default()),
            logging: Logging::default(),
            admin: Some(crate::config::DEFAULT_ADMIN),
        })
    }
}
