# Entry points. Each target does its own set-up; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := test

.PHONY: test lint demo bench image fuzz testenv-up testenv-down build clean-cache

## test: build everything needed, start the local environment, run all tests, stop it
test:
	hack/test.sh

## lint: formatting and clippy, as CI checks them
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

## demo: the main job end to end on the local environment
demo:
	hack/demo.sh

## bench: cost of N VaultSecrets over K secrets, several namespaces, U unrelated Secrets (release build); BENCH_SIZES="100 1000 5000"
bench:
	hack/bench.sh

## image: the operator's image as an OCI archive in target/image/ (no Docker engine needed);
## imported into the local node's containerd when the environment is up
image:
	hack/image.sh

## fuzz: run each fuzz target (fuzz/, cargo-fuzz) for FUZZ_SECONDS (default 300)
fuzz:
	hack/fuzz.sh

## testenv-up: start the local environment and write .testenv/env.sh
testenv-up:
	hack/testenv-up.sh

## testenv-down: stop exactly what testenv-up started and remove .testenv
testenv-down:
	hack/testenv-down.sh

build:
	cargo build --workspace

## clean-cache: remove the built Kubernetes binaries and the emulator from the cache
clean-cache:
	rm -rf "$${VAULTSYNC_CACHE:-$$HOME/.cache/vaultsync}"
