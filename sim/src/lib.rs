//! wasp-sim: placeholder, being built (issue 3).
