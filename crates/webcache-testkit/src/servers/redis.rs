//! Test fixture: a real redis server on a free loopback port.
