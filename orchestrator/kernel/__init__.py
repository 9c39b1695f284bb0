"""Kernel stage: source, series, apply, variants, config, toolchain, build, KVM selftests, the project's guest programs."""
