# sluice — see README.md. `make run` and `make test` are the two commands.
GO       ?= go
BIN      := bin
VAR      := var
PKGS     := ./...
# Long end-to-end tests are bounded by go test's own timeout, well inside
# CI's budget; soak and load runs live in `make bench` / `make soak`.
TEST_TIMEOUT ?= 12m
export GOFLAGS ?= -mod=mod

COMMANDS := sluiced sluice sendmail
ALIASES  := mailq postqueue postsuper newaliases

.PHONY: all build run test test-peers vet bench fuzz soak man clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS))
	@for a in $(ALIASES); do ln -sf sendmail $(BIN)/$$a; done
	@# The maildrop helper is a copy, not a link: packaging makes it setgid.
	@cp -f $(BIN)/sendmail $(BIN)/sluice-postdrop
	@ln -sf sluice $(BIN)/pmta

# The daemon in the foreground on the embedded default config, written
# under ./var the first time (SMTP on 127.0.0.1:2525, spool and logs in ./var).
run: build
	@mkdir -p $(VAR)
	@test -f $(VAR)/sluice.conf || $(BIN)/sluiced --print-default-config --var-dir $(CURDIR)/$(VAR) > $(VAR)/sluice.conf
	$(BIN)/sluiced --config $(VAR)/sluice.conf

test-peers:
	bash scripts/install-test-peers.sh

vet:
	$(GO) vet $(PKGS)

# Under the race detector: the whole suite takes about 2 minutes on 2 cores.
test: test-peers build vet
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

bench: build
	$(GO) run ./bench/disk
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./spool/...
	$(GO) test -run '^$$' -bench Mailq100k -benchtime 3x ./internal/daemon
	$(GO) test -run '^$$' -bench Milters -benchtime 2s ./internal/daemon
	$(GO) test -run '^$$' -bench . -benchtime 2s ./vmta ./internal/dkim ./milter
	bash bench/run.sh

# Long runs: ten minutes of smtp-source load through the daemon, and the
# SIGKILL-under-load test twenty times over.
soak: build
	DURATION=600 bash bench/run.sh
	$(GO) test -count=20 -run 'SIGKILL' -timeout 60m ./e2e

# Each fuzz target for a short while; `FUZZTIME=10m make fuzz` for longer.
FUZZTIME ?= 20s
fuzz:
	@bash scripts/fuzz-all.sh $(FUZZTIME)

man: build
	$(BIN)/sluice man sluice.conf > man/sluice.conf.5

clean:
	rm -rf $(BIN)

# .deb and .rpm with nfpm, pinned and built into bin/tools by this target:
# a maintained packager rather than hand-rolled dpkg-deb/rpmbuild scripts.
# Writes dist/sluice_$(PKG_VERSION)_amd64.deb and .rpm; see packaging/.
TOOLS        := $(CURDIR)/$(BIN)/tools
NFPM_VERSION := v2.41.3
PKG_VERSION  ?= $(or $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed -e 's/^v//' -e 's/-/./g'),0.0.0)

$(TOOLS)/nfpm-$(NFPM_VERSION):
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) GOFLAGS= $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
	@touch $@

.PHONY: package
package: build $(TOOLS)/nfpm-$(NFPM_VERSION)
	@rm -rf dist/.build && mkdir -p dist/.build/man
	@for m in man/*.[158]; do gzip -9n < $$m > dist/.build/man/$${m#man/}.gz; done
	VERSION=$(PKG_VERSION) ARCH=amd64 $(TOOLS)/nfpm package -f packaging/nfpm.yaml -p deb -t dist/sluice_$(PKG_VERSION)_amd64.deb
	VERSION=$(PKG_VERSION) ARCH=amd64 $(TOOLS)/nfpm package -f packaging/nfpm.yaml -p rpm -t dist/sluice_$(PKG_VERSION)_amd64.rpm
