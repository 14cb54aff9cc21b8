//! Test fixture: a real postgres server on a free loopback port.
