//! Test fixture: a real memcached server on a free loopback port.
