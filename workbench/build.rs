include!("../build-support/link_libtorch.rs");
