//! The order-fulfillment example.

fn main() {}
