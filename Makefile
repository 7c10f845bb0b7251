# The suite's entry points. `make demo` and `make test` install what they need.
GO       ?= go
BIN      := $(CURDIR)/bin
DESTDIR  ?=
CNI_BIN  ?= /opt/cni/bin
CNI_CONF ?= /etc/cni/net.d
SBIN     ?= /usr/local/bin
# Debian packages the privileged tests and the demo use (unshare and mount
# give cnitool a private view of /var/lib; GNU time measures the bench's peak RSS;
# python3 is the demo's web server in a pod and its HTTP client; containerd and runc are the
# node the CRI and kubelet tests run pods on; iperf3 the bandwidth plugin's shaped streams;
# dbus-daemon the private bus of the firewall plugin's firewalld test).
DEB_PKGS := iproute2 iptables nftables iputils-ping util-linux mount etcd-server time python3 iperf3 containerd runc dbus-daemon dnsmasq-base
# What install-conf installs: the node's network. The other files of conf/
# are examples; the lexically first conflist in $(CNI_CONF) is the one used.
CONF_FILES ?= conf/10-cbr0.conflist

# What every binary says it is (VERSION's about string, subnetd --version, cnictl version).
VERSION ?= $(shell git describe --tags --always --dirty --match 'v*' 2>/dev/null || echo devel)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/cnisuite/cni/internal/version.Version=$(VERSION) -X github.com/cnisuite/cni/internal/version.Commit=$(COMMIT)

.PHONY: build test fuzz soak bench install install-conf demo demo-kube deps k8s-bins clean release image

# Plugins go to bin/, the node daemon and the operator's cnictl to bin/daemon/: the two are
# installed to different places.
# The plugins are static, as the reference's releases are: they are copied onto nodes whatever
# their libc, and a static Go binary starts about 1 ms sooner, once per plugin per pod (make bench).
# subnetd too, and without gRPC's x/net/trace (tag grpcnotrace, unused): 19.1 -> 16.9 MB resident.
# subnetd is built without its Kubernetes API mode (tag nokube) and hands that mode over to
# subnetd-kube, built with it: linking client-go would cost every node 5 MB resident (13.3 -> 18.5).
build:
	@mkdir -p $(BIN)/daemon
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./plugins/...
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -tags grpcnotrace,nokube -o $(BIN)/daemon/ ./cmd/subnetd ./cmd/subnetd-etcd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -tags grpcnotrace -o $(BIN)/daemon/subnetd-kube ./cmd/subnetd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/daemon/ ./cmd/cnictl

# The release archives and their checksums, in the reference's names (scripts/release.sh).
RELEASE_DIR ?= $(CURDIR)/release
release:
	./scripts/release.sh $(RELEASE_DIR) $(VERSION) "$(LDFLAGS)"

# The DaemonSet's image alone (make release builds it too), from make build's binaries: an OCI
# archive for `ctr -n k8s.io images import`; prints the image's name, which the manifests take.
IMAGE ?= localhost/cnisuite/subnetd:$(VERSION)
image: build
	$(GO) run ./scripts/mkimage -plugins $(BIN) -daemons $(BIN)/daemon -name $(IMAGE) \
		-out $(RELEASE_DIR)/cnisuite-image-linux-$$($(GO) env GOARCH)-$(VERSION).tar \
		-epoch $$(git log -1 --format=%ct 2>/dev/null || echo 0)

deps:
	@./scripts/deps.sh $(DEB_PKGS)

# staticcheck, which make test runs next to go vet: pinned, built once from the Go module proxy
# into ${XDG_CACHE_HOME:-$HOME/.cache}/cnisuite/staticcheck/<version>/ (~1 minute; nothing once
# there). Only make test needs it, so it is not part of deps (make demo stays under a minute).
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/cnisuite/staticcheck/$(STATICCHECK_VERSION)/staticcheck
$(STATICCHECK):
	GOBIN="$(@D)" $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# The Kubernetes components the privileged tests run (test/kube: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubectl), of the release
# test/kube/k8sbuild pins, built once into ${XDG_CACHE_HOME:-$HOME/.cache}/cnisuite/k8s/<release>/:
# ~15 minutes on 2 idle cores the first time, outside any test's timeout; nothing once cached.
k8s-bins: deps
	GO=$(GO) ./scripts/k8s-bins.sh

test: deps build k8s-bins $(STATICCHECK)
	$(GO) vet ./...
	$(GO) vet -tags nokube ./internal/subnetd
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags nokube ./internal/subnetd
	$(GO) test -count=1 -timeout 20m ./...
	FUZZTIME=$(TEST_FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

# Every fuzz target of the tree, FUZZTIME each (go test fuzzes one target per run).
# make test counts executions instead of seconds: a deadline that expires while a
# worker is busy makes go test report "context deadline exceeded" as a failure.
FUZZTIME ?= 2s
TEST_FUZZTIME ?= 20000x
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

# The long tier (not part of test): the reliability suite's long load runs
# (SOAK=1 selects them), e2e's kill test at 1000 cycles a chain, and every
# fuzz target for SOAK_FUZZTIME.
SOAK_FUZZTIME ?= 60s
soak: deps build
	SOAK=1 $(GO) test -count=1 -timeout 120m ./test/reliability/...
	SOAK=1 $(GO) test -count=1 -timeout 60m -run TestKillSafety ./test/e2e
	FUZZTIME=$(SOAK_FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

# Side by side with the reference plugins (built from the Go module proxy),
# in namespaces it creates and deletes; not part of test (which runs a smoke
# of it). BENCH_FLAGS=-pods=100 etc. to change the sizes; `go run ./bench -kube-only`
# measures the lease daemons on the Kubernetes API alone (BENCHMARKS.md).
bench: deps
	$(GO) run ./bench -md BENCHMARKS.md $(BENCH_FLAGS)

install: build
	install -d $(DESTDIR)$(CNI_BIN) $(DESTDIR)$(SBIN)
	find $(BIN) -maxdepth 1 -type f -exec install -m 0755 {} $(DESTDIR)$(CNI_BIN)/ \;
	install -m 0755 $(BIN)/daemon/* $(DESTDIR)$(SBIN)/

# Example configurations are installed only when asked: they would become the node's network.
install-conf:
	install -d $(DESTDIR)$(CNI_CONF)
	install -m 0644 $(CONF_FILES) $(DESTDIR)$(CNI_CONF)/

demo: deps build
	@./scripts/demo.sh $(BIN)

# The Kubernetes cluster in a box: kubelet and containerd nodes, the DaemonSet and its image.
demo-kube: deps build k8s-bins
	@./scripts/demo-kube.sh

clean:
	rm -rf $(BIN)
