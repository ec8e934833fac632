package qmgr

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/qid"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// Full-flow tests: real spool, real vmta.Deliverer dialling from several
// loopback source addresses (127.0.0.2, 127.0.0.3, ... as virtual MTAs),
// smtpsink as the receiver.

type flow struct {
	sp   *spool.Spool
	sink *smtpsink.Sink
	rec  *recorder
	m    *Manager
	cfg  *config.Config

	mu      sync.Mutex
	changes []vmta.Change
}

// startFlow runs a manager over cfgText, where PORT is the sink's port.
func startFlow(t *testing.T, cfgText string, sinkOpt smtpsink.Options) *flow {
	t.Helper()
	sink := smtpsink.Start(t, sinkOpt)
	cfgText = strings.ReplaceAll(cfgText, "PORT", fmt.Sprint(sink.Port()))
	cfg, err := config.Parse("test.conf", []byte("host-name mx.test.example\npostmaster postmaster@test.example\n"+cfgText))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{SegmentSize: 8 << 20, Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	f := &flow{sp: sp, sink: sink, rec: &recorder{}, cfg: cfg}
	dlv := vmta.NewDeliverer(vmta.Options{Dial: ConnectLimitedDial(nil), Logf: t.Logf})
	f.m = New(Options{Spool: sp, Config: func() *config.Config { return cfg }, Deliver: dlv, Recorder: f.rec, Logf: t.Logf,
		OnChange: func(c vmta.Change) { f.mu.Lock(); f.changes = append(f.changes, c); f.mu.Unlock() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		dlv.Close()
		sp.Close()
	})
	return f
}

// submitMany queues n one-recipient messages through virtual MTA or pool
// vm in one durable batch and returns their ids.
func (f *flow) submitMany(t *testing.T, n int, vm, rcptFmt string) []string {
	t.Helper()
	var b spool.Batch
	var ids []string
	for i := 0; i < n; i++ {
		id := qid.New(time.Now())
		ids = append(ids, id)
		b.Submit(&spool.Message{
			ID: id, Arrival: time.Now(), Sender: "s@a.example", VMTA: vm,
			Recipients: []spool.Recipient{{Addr: fmt.Sprintf(rcptFmt, i)}},
			Content:    []byte("From: <s@a.example>\r\nSubject: " + id + "\r\n\r\nbody\r\n"),
		}, false)
	}
	if err := f.sp.Commit(&b); err != nil {
		t.Fatal(err)
	}
	return ids
}

func (f *flow) changeList() []vmta.Change {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]vmta.Change(nil), f.changes...)
}

const vmtasAB = `
<virtual-mta a>
  smtp-source-host 127.0.0.2 a.test.example
</virtual-mta>
<virtual-mta b>
  smtp-source-host 127.0.0.3 b.test.example
</virtual-mta>
`

const twoVMTAs = vmtasAB + `
<domain *>
  route [127.0.0.1]:PORT
  use-starttls no
  retry-after 1s
</domain>
`

func TestPoolRotationFollowsWeights(t *testing.T) {
	f := startFlow(t, twoVMTAs+`
<virtual-mta c>
  smtp-source-host 127.0.0.4 c.test.example
  pool-weight 2
</virtual-mta>
<virtual-mta-pool p>
  virtual-mta a
  virtual-mta b
  virtual-mta c
</virtual-mta-pool>
`, smtpsink.Options{})
	// a:b:c = 1:1:2
	const n = 1000
	f.submitMany(t, n, "p", "u%d@x.example")
	msgs, err := f.sink.WaitMessages(n, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, m := range msgs {
		count[m.PeerIP]++
	}
	want := map[string]float64{"127.0.0.2": 0.25, "127.0.0.3": 0.25, "127.0.0.4": 0.5}
	for ip, share := range want {
		got := float64(count[ip]) / n
		if math.Abs(got-share) > 0.05 {
			t.Errorf("%s sent %.3f of the mail, want %.2f±0.05 (%v)", ip, got, share, count)
		}
	}
	t.Logf("shares: %v", count)
	evs := f.rec.wait(t, n)
	if evs[0].VMTAPool != "p" || evs[0].VMTA == "" || !strings.HasPrefix(evs[0].Queue.Domain, "x.example") {
		t.Errorf("event names %+v", evs[0])
	}
}

func TestDeferredRecipientRetriesFromSameIP(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][]string{} // rcpt -> peer IPs of its RCPTs
	f := startFlow(t, twoVMTAs+`
<virtual-mta c>
  smtp-source-host 127.0.0.4 c.test.example
</virtual-mta>
<virtual-mta-pool p>
  virtual-mta a
  virtual-mta b
  virtual-mta c
</virtual-mta-pool>
`, smtpsink.Options{Func: func(c smtpsink.Call) string {
		if c.Stage != smtpsink.StageRcpt {
			return ""
		}
		mu.Lock()
		defer mu.Unlock()
		addr := strings.ToLower(c.Arg)
		seen[addr] = append(seen[addr], c.Msg.PeerIP)
		if len(seen[addr]) == 1 {
			return "450 4.2.0 greylisted, come back from the same address"
		}
		return ""
	}})
	const n = 30
	f.submitMany(t, n, "p", "g%d@x.example")
	evs := f.rec.wait(t, 2*n)
	sent := 0
	for _, ev := range evs {
		if ev.Status == "sent" {
			sent++
		}
	}
	if sent != n {
		t.Fatalf("%d sent, want %d", sent, n)
	}
	mu.Lock()
	defer mu.Unlock()
	ips := map[string]bool{}
	for addr, got := range seen {
		if len(got) != 2 || got[0] != got[1] {
			t.Errorf("%s tried from %v, want twice from one address", addr, got)
		}
		ips[got[0]] = true
	}
	if len(ips) < 2 {
		t.Errorf("all recipients from %v: the pool did not rotate", ips)
	}
}

func TestMaxSMTPOutAtTheSink(t *testing.T) {
	f := startFlow(t, twoVMTAs+`
<domain x.example>
  route [127.0.0.1]:PORT
  use-starttls no
  max-smtp-out 3
</domain>
`, smtpsink.Options{Delays: map[smtpsink.Stage]time.Duration{smtpsink.StageAfterData: 40 * time.Millisecond}})
	const n = 60
	f.submitMany(t, n, "a", "m%d@x.example")
	if _, err := f.sink.WaitMessages(n, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if p := f.sink.MaxConcurrent(); p != 3 {
		t.Fatalf("peak %d concurrent connections at the sink, want exactly 3", p)
	}
}

// With source-ip-max-msg-rate 20/s on 127.0.0.2, that address never sends
// more than 20 MAIL commands in any 1 s window and keeps close to 20/s,
// while 127.0.0.3, unlimited, sends at least five times as fast.
func TestSourceIPMsgRate(t *testing.T) {
	var mu sync.Mutex
	var mails = map[string][]time.Time{}
	f := startFlow(t, vmtasAB+`
<domain *>
  route [127.0.0.1]:PORT
  use-starttls no
  max-smtp-out 20
  source-ip-max-msg-rate 127.0.0.2/32 20/s
</domain>
`, smtpsink.Options{Func: func(c smtpsink.Call) string {
		if c.Stage == smtpsink.StageMail {
			mu.Lock()
			mails[c.Msg.PeerIP] = append(mails[c.Msg.PeerIP], time.Now())
			mu.Unlock()
		}
		return ""
	}})
	f.submitMany(t, 400, "a", "r%d@x.example")
	f.submitMany(t, 1500, "b", "u%d@y.example")
	start := time.Now()
	time.Sleep(10 * time.Second)
	mu.Lock()
	limited := append([]time.Time(nil), mails["127.0.0.2"]...)
	free := append([]time.Time(nil), mails["127.0.0.3"]...)
	mu.Unlock()
	sort.Slice(limited, func(i, j int) bool { return limited[i].Before(limited[j]) })
	for i := range limited {
		n := 0
		for j := i; j < len(limited) && limited[j].Sub(limited[i]) < time.Second; j++ {
			n++
		}
		if n > 20 {
			var gaps []string
			for j := i + 1; j < i+n; j++ {
				gaps = append(gaps, limited[j].Sub(limited[j-1]).Round(time.Millisecond).String())
			}
			t.Fatalf("%d MAIL commands from 127.0.0.2 within 1s starting %v into the run; gaps %v", n, limited[i].Sub(start), gaps)
		}
	}
	nl := 0
	for _, ts := range limited {
		if ts.Sub(start) < 10*time.Second {
			nl++
		}
	}
	if len(free) == 0 {
		t.Fatal("the unlimited address sent nothing")
	}
	freeRate := float64(len(free)) / free[len(free)-1].Sub(start).Seconds()
	t.Logf("127.0.0.2 (20/s) sent %d in 10 s; 127.0.0.3 (unlimited) sent %d at %.0f/s", nl, len(free), freeRate)
	if nl < 180 {
		per := make([]int, 11)
		for _, ts := range limited {
			per[min(10, int(ts.Sub(start)/time.Second))]++
		}
		t.Errorf("limited address sent %d in 10 s, want >= 180 (18/s); per second %v", nl, per)
	}
	if freeRate < 5*float64(nl)/10 {
		t.Errorf("unlimited address sent %.0f/s, want >= 5x %.1f/s", freeRate, float64(nl)/10)
	}
}

const backoffConf = twoVMTAs + `
<smtp-pattern-list isp>
  reply /^421 4\.7\.0/ mode=backoff
</smtp-pattern-list>
<domain x.example>
  route [127.0.0.1]:PORT
  use-starttls no
  retry-after 1s
  backoff-retry-after 1s
  smtp-pattern-list isp
  backoff-max-msg-rate 5/s
  backoff-to-normal-after BTNAFTER
  backoff-to-normal-after-delivery BTNDELIV
</domain>
`

// refuseFirst answers the first n MAIL commands with reply.
func refuseFirst(n int, reply string) func(smtpsink.Call) string {
	var mu sync.Mutex
	return func(c smtpsink.Call) string {
		if c.Stage != smtpsink.StageMail {
			return ""
		}
		mu.Lock()
		defer mu.Unlock()
		if n > 0 {
			n--
			return reply
		}
		return ""
	}
}

func TestBackoffPatternLimitsRateAndEndsByTimer(t *testing.T) {
	var mu sync.Mutex
	var mails []time.Time
	refuse := refuseFirst(1, "421 4.7.0 too fast, slow down")
	conf := strings.NewReplacer("BTNAFTER", "2s", "BTNDELIV", "no").Replace(backoffConf)
	f := startFlow(t, conf, smtpsink.Options{Func: func(c smtpsink.Call) string {
		if c.Stage == smtpsink.StageMail {
			mu.Lock()
			mails = append(mails, time.Now())
			mu.Unlock()
		}
		return refuse(c)
	}})
	f.submitMany(t, 1, "a", "first%d@x.example")
	f.rec.wait(t, 1)
	if m := f.m.Backoff().Mode("x.example/a", time.Now()); m != vmta.ModeBackoff {
		t.Fatalf("mode %v after a 421 4.7.0, want backoff", m)
	}
	begin := time.Now()
	f.submitMany(t, 10, "a", "b%d@x.example")
	f.rec.wait(t, 11)
	elapsed := time.Since(begin)
	// 10 recipients at 5/s in backoff: at least 9 intervals of 200 ms.
	if elapsed < 1700*time.Millisecond {
		t.Errorf("10 recipients in backoff took %v, want >= 1.8s (backoff-max-msg-rate 5/s)", elapsed)
	}
	time.Sleep(2500*time.Millisecond - time.Since(begin))
	if m := f.m.Backoff().Mode("x.example/a", time.Now()); m != vmta.ModeNormal {
		t.Fatalf("mode %v after backoff-to-normal-after 2s", m)
	}
	chs := f.changeList()
	if len(chs) != 2 || chs[0].What != "mode backoff" || !strings.Contains(chs[0].Reason, "421 4.7.0 too fast") || chs[1].What != "mode normal" {
		t.Fatalf("changes %+v", chs)
	}
	if c := f.m.Backoff().Counts(); c.ToBackoff != 1 || c.ToNormal != 1 {
		t.Fatalf("counts %+v", c)
	}
	// The first recipient, deferred by the 421, was retried after
	// backoff-retry-after.
	evs := f.rec.wait(t, 12)
	if evs[0].Status != "deferred" {
		t.Fatalf("first event %+v", evs[0])
	}
}

func TestBackoffEndsAtFirstDelivery(t *testing.T) {
	conf := strings.NewReplacer("BTNAFTER", "1h", "BTNDELIV", "yes").Replace(backoffConf)
	f := startFlow(t, conf, smtpsink.Options{Func: refuseFirst(1, "421 4.7.0 slow down")})
	f.submitMany(t, 1, "a", "d%d@x.example")
	evs := f.rec.wait(t, 2) // deferred, then sent on retry
	if evs[0].Status != "deferred" || evs[1].Status != "sent" {
		t.Fatalf("events %s, %s", evs[0].Status, evs[1].Status)
	}
	if m := f.m.Backoff().Mode("x.example/a", time.Now()); m != vmta.ModeNormal {
		t.Fatalf("mode %v after a delivery with backoff-to-normal-after-delivery", m)
	}
	chs := f.changeList()
	if len(chs) != 2 || chs[1].What != "mode normal" || !strings.Contains(chs[1].Reason, "delivery") {
		t.Fatalf("changes %+v", chs)
	}
}

// disable-source-ip moves a pool's traffic to its other members and back
// once the address is re-enabled.
func TestDisableSourceIPMovesTraffic(t *testing.T) {
	var mu sync.Mutex
	blocked := true
	f := startFlow(t, vmtasAB+`
<virtual-mta-pool p>
  virtual-mta a
  virtual-mta b
</virtual-mta-pool>
<smtp-pattern-list isp>
  reply /4\.7\.1 .*blocked/ disable-source-ip reenable-after=2s
</smtp-pattern-list>
<domain *>
  route [127.0.0.1]:PORT
  use-starttls no
  retry-after 1s
  smtp-pattern-list isp
</domain>
`, smtpsink.Options{Func: func(c smtpsink.Call) string {
		mu.Lock()
		defer mu.Unlock()
		if c.Stage == smtpsink.StageMail && blocked && c.Msg.PeerIP == "127.0.0.2" {
			return "451 4.7.1 127.0.0.2 blocked"
		}
		return ""
	}})
	const n = 40
	f.submitMany(t, n, "p", "v%d@x.example")
	evs := f.rec.wait(t, n)
	disabledAt := time.Now()
	_ = evs
	msgs, err := f.sink.WaitMessages(n, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.PeerIP != "127.0.0.3" {
			t.Fatalf("a message went from %s while 127.0.0.2 was refused", m.PeerIP)
		}
	}
	ds := f.m.Backoff().Disabled()
	if len(ds) != 1 || ds[0].SourceIP != "127.0.0.2" || ds[0].Queue != "x.example" {
		t.Fatalf("disabled %+v", ds)
	}
	mu.Lock()
	blocked = false
	mu.Unlock()
	time.Sleep(2*time.Second - time.Since(disabledAt) + 300*time.Millisecond)
	f.sink.Reset()
	f.submitMany(t, n, "p", "w%d@x.example")
	msgs, err = f.sink.WaitMessages(n, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	from2 := 0
	for _, m := range msgs {
		if m.PeerIP == "127.0.0.2" {
			from2++
		}
	}
	if from2 == 0 {
		t.Fatal("127.0.0.2 not used again after reenable-after")
	}
	whats := []string{}
	for _, c := range f.changeList() {
		whats = append(whats, c.What)
	}
	if strings.Join(whats, ",") != "source disabled,source enabled" {
		t.Fatalf("changes %v", whats)
	}
}

// source-ip-max-smtp-out in <domain *> caps one address over all queues.
func TestSourceIPMaxSMTPOutAcrossQueues(t *testing.T) {
	var mu sync.Mutex
	open, peak := map[int]bool{}, 0
	f := startFlow(t, vmtasAB+`
<domain *>
  route [127.0.0.1]:PORT
  use-starttls no
  max-smtp-out 5
  max-msg-per-connection 1
  source-ip-max-smtp-out 127.0.0.2 2
</domain>
`, smtpsink.Options{Delays: map[smtpsink.Stage]time.Duration{smtpsink.StageAfterData: 30 * time.Millisecond},
		Func: func(c smtpsink.Call) string {
			mu.Lock()
			defer mu.Unlock()
			switch c.Stage {
			case smtpsink.StageMail:
				open[c.Conn] = true
				peak = max(peak, len(open))
			case smtpsink.StageAfterData:
				delete(open, c.Conn)
			}
			return ""
		}})
	f.submitMany(t, 15, "a", "p%d@x.example")
	f.submitMany(t, 15, "a", "q%d@y.example")
	if _, err := f.sink.WaitMessages(30, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != 2 {
		t.Fatalf("peak %d transactions at once from 127.0.0.2 over two queues, want 2", peak)
	}
}

// max-connect-rate paces new connections (max-msg-per-connection 1 makes
// every message need one).
func TestMaxConnectRate(t *testing.T) {
	f := startFlow(t, vmtasAB+`
<domain *>
  route [127.0.0.1]:PORT
  use-starttls no
  max-msg-per-connection 1
  max-connect-rate 10/s
</domain>
`, smtpsink.Options{})
	begin := time.Now()
	f.submitMany(t, 12, "a", "c%d@x.example")
	if _, err := f.sink.WaitMessages(12, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	conns := f.sink.Connections()
	if len(conns) < 12 {
		t.Fatalf("%d connections for 12 messages with max-msg-per-connection 1", len(conns))
	}
	sort.Slice(conns, func(i, j int) bool { return conns[i].Start.Before(conns[j].Start) })
	if d := conns[11].Start.Sub(conns[0].Start); d < 1050*time.Millisecond {
		t.Fatalf("12 connections within %v, want >= 1.1s at 10/s", d)
	}
	t.Logf("12 connections in %v", time.Since(begin))
}
