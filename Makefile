# The suite's entry points. `make demo` and `make test` install what they need.
GO       ?= go
BIN      := $(CURDIR)/bin
DESTDIR  ?=
CNI_BIN  ?= /opt/cni/bin
CNI_CONF ?= /etc/cni/net.d
# Debian packages the privileged tests and the demo use.
DEB_PKGS := iproute2 iptables nftables iputils-ping

.PHONY: build test install install-conf demo deps clean fuzz

build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./plugins/...

deps:
	@./scripts/deps.sh $(DEB_PKGS)

test: deps build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

install: build
	install -d $(DESTDIR)$(CNI_BIN)
	install -m 0755 $(BIN)/* $(DESTDIR)$(CNI_BIN)/

# Example configurations are installed only when asked: they would become the node's network.
install-conf:
	install -d $(DESTDIR)$(CNI_CONF)
	install -m 0644 conf/*.conflist $(DESTDIR)$(CNI_CONF)/

demo: deps build
	@./scripts/demo.sh $(BIN)

clean:
	rm -rf $(BIN)
