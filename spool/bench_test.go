package spool

import (
	"bufio"
	"fmt"
	"math"
	"math/rand"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/qid"
	"golang.org/x/sys/unix"
)

// Benchmarks size their own work and are meant for -benchtime 1x
// (`make bench`); each reports its figures with b.ReportMetric.

// syncProbe prepares, in dir, a file for measuring what one small durable
// append costs the disk: a 2 KiB write into a preallocated, zeroed file
// plus fdatasync (the same pattern the committer uses). Each call of the
// returned function does one and returns its duration.
func syncProbe(tb testing.TB, dir string, n int) func() time.Duration {
	f, err := os.CreateTemp(dir, "fsync-probe")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close(); os.Remove(f.Name()) })
	size := int64(n) * 2048
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		tb.Fatal(err)
	}
	if err := (osFile{f}).zeroFill(size); err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 2048)
	i := 0
	return func() time.Duration {
		t := time.Now()
		if _, err := f.WriteAt(buf, int64(i%n)*2048); err != nil {
			tb.Fatal(err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			tb.Fatal(err)
		}
		i++
		return time.Since(t)
	}
}

// fdatasyncLatency is the median of n probes (syncProbe).
func fdatasyncLatency(tb testing.TB, dir string, n int) time.Duration {
	probe := syncProbe(tb, dir, n)
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = probe()
	}
	return median(ds)
}

func median(ds []time.Duration) time.Duration { return percentile(ds, 50) }

// percentile returns the p-th percentile of ds (100: the maximum),
// sorting ds in place.
func percentile(ds []time.Duration, p int) time.Duration {
	slices.Sort(ds)
	return ds[min(len(ds)-1, len(ds)*p/100)]
}

// openBench opens a spool in dir, closed when the benchmark ends, and
// waits for its recovery.
func openBench(b *testing.B, dir string, opt Options) *Spool {
	s, err := Open(dir, opt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	<-s.Recovered()
	return s
}

func benchMsg(content []byte, nrcpt int, domain int) *Message {
	m := &Message{ID: qid.New(time.Now()), Arrival: time.Now(), Sender: "bulk@sender.example", VMTA: "pool1", Content: content}
	for i := 0; i < nrcpt; i++ {
		// 30-byte addresses
		m.Recipients = append(m.Recipients, Recipient{Addr: fmt.Sprintf("u%08d@dom%05d.example.com", rand.Intn(1e8), domain)[:30]})
	}
	return m
}

// BenchmarkAppend64 is 64 goroutines appending 2 KiB messages durably,
// twice: into a new spool (cold: every segment is zero-filled before use,
// which doubles what the disk writes), then, once those messages are
// delivered and their segments compacted away, again (warm: the files of
// finished segments are reused, as in a spool that has been running).
func BenchmarkAppend64(b *testing.B) { benchAppend64(b, false) }

// BenchmarkAppend64NoSync is the same run without fdatasync: what the
// spool itself can do, its ceiling on a disk whose flushes cost nothing.
func BenchmarkAppend64NoSync(b *testing.B) { benchAppend64(b, true) }

func benchAppend64(b *testing.B, noSync bool) {
	dir := b.TempDir()
	lat := fdatasyncLatency(b, dir, 300)
	s := openBench(b, dir, Options{noSync: noSync})
	content := make([]byte, 2048)
	for i := range content {
		content[i] = 'a' + byte(i%26)
	}
	const writers, per = 64, 1500
	n := writers * per
	run := func(name string) []*Message {
		// The messages are made before the clock starts: what is
		// measured is the spool, not building envelopes.
		msgs := make([][]*Message, writers)
		var all []*Message
		for w := range msgs {
			for i := 0; i < per; i++ {
				msgs[w] = append(msgs[w], benchMsg(content, 1, i%1000))
			}
			all = append(all, msgs[w]...)
		}
		s.stats.mu.Lock()
		s.stats.fsyncs, s.stats.batches, s.stats.hist = 0, 0, [12]int{}
		s.stats.writeTime, s.stats.syncTime, s.stats.applyTime, s.stats.gatherTime = 0, 0, 0, 0
		s.stats.mu.Unlock()
		start := time.Now()
		var wg sync.WaitGroup
		var failed atomic.Int64
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, m := range msgs[w] {
					if err := s.Submit(m); err != nil {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		if failed.Load() > 0 {
			b.Fatalf("%d submissions failed", failed.Load())
		}
		s.stats.mu.Lock()
		fsyncs, batches, hist := s.stats.fsyncs, s.stats.batches, s.stats.hist
		wt, st, at, gt := s.stats.writeTime, s.stats.syncTime, s.stats.applyTime, s.stats.gatherTime
		s.stats.mu.Unlock()
		if !noSync && fsyncs != batches {
			b.Errorf("%s: fsyncs %d != batches %d", name, fsyncs, batches)
		}
		var h strings.Builder
		for i, c := range hist {
			if c > 0 {
				fmt.Fprintf(&h, " [%d,%d):%d", 1<<i, 1<<(i+1), c)
			}
		}
		syncs := fmt.Sprintf("%d fsyncs = %d batches", fsyncs, batches)
		if noSync {
			syncs = fmt.Sprintf("%d batches, no fdatasync", batches)
		}
		b.Logf("%s: %d msgs in %v: %.0f msgs/s, %s (%.1f msgs each), fdatasync p50 %v; per batch: write %v, fdatasync %v, apply+answer %v, gathering the next %v; batch sizes (requests):%s",
			name, n, el.Round(time.Millisecond), float64(n)/el.Seconds(), syncs, float64(n)/float64(batches), lat,
			wt/time.Duration(batches), st/time.Duration(batches), at/time.Duration(batches), gt/time.Duration(batches), h.String())
		if name == "cold" {
			b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(fsyncs), "fsyncs")
			b.ReportMetric(float64(batches), "batches")
			b.ReportMetric(float64(n)/float64(batches), "msgs/batch")
		} else {
			b.ReportMetric(float64(n)/el.Seconds(), "warm-msgs/s")
		}
		return all
	}
	b.ResetTimer()
	cold := run("cold")
	b.StopTimer()
	for k := 0; k < len(cold); k += 1000 {
		deliverBench(b, s, cold[k:min(k+1000, len(cold))])
	}
	// Every segment the cold run sealed (a new spool numbers them from 1)
	// holds only finished messages now: wait for all of them to be
	// removed and readied for reuse, up to what the spool keeps.
	s.mu.Lock()
	sealed := int(s.active.seq) - 1
	s.mu.Unlock()
	waitReused(b, s, min(sealed, maxRecycled))
	b.StartTimer()
	run("warm")
	b.ReportMetric(float64(lat.Microseconds()), "fdatasync-p50-µs")
}

func deliverBench(b *testing.B, s *Spool, ms []*Message) {
	var batch Batch
	for _, m := range ms {
		batch.Delivered(m.ID, 0, "250 ok")
	}
	if err := s.Commit(&batch); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppendLatency is one writer: its median Append latency against
// the disk's median fdatasync latency, the two measured alternately so
// that both see the same disk (a shared VM's disk varies by the second).
func BenchmarkAppendLatency(b *testing.B) {
	dir := b.TempDir()
	s := openBench(b, dir, Options{})
	content := make([]byte, 2048)
	const n = 1000
	probe := syncProbe(b, dir, n)
	msgs := make([]*Message, n)
	for i := range msgs {
		msgs[i] = benchMsg(content, 1, i%1000)
	}
	ds, syncs := make([]time.Duration, n), make([]time.Duration, n)
	b.ResetTimer()
	for i, m := range msgs {
		syncs[i] = probe()
		t := time.Now()
		if err := s.Submit(m); err != nil {
			b.Fatal(err)
		}
		ds[i] = time.Since(t)
	}
	b.StopTimer()
	p99 := percentile(ds, 99)
	p50, lat := median(ds), median(syncs)
	b.ReportMetric(float64(p50.Microseconds()), "append-p50-µs")
	b.ReportMetric(float64(lat.Microseconds()), "fdatasync-p50-µs")
	b.ReportMetric(float64(p50)/float64(lat), "ratio")
	b.Logf("one writer: append p50 %v p99 %v; fdatasync p50 %v (alternating); ratio %.2f (floor: 1.5)", p50, p99, lat, float64(p50)/float64(lat))
}

// rssAnon reads the process's anonymous resident memory.
func rssAnon() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func settledRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return rssAnon()
}

// BenchmarkMillion builds a spool of 1,000,000 queued messages (one
// 30-byte recipient each, 1,000 domains) with about 5 state records per
// message, then measures (a) recovery time after dropping the page cache
// and (b) anonymous RSS per queued recipient in the recovered spool.
func BenchmarkMillion(b *testing.B) {
	const n = 1_000_000
	dir := b.TempDir()
	buildMillion(b, dir, n)
	base := settledRSS()
	b.Logf("anon RSS after building and closing: %d MiB", base>>20)

	// Drop the page cache for the segments.
	names, _ := os.ReadDir(dir)
	for _, e := range names {
		f, err := os.Open(dir + "/" + e.Name())
		if err == nil {
			unix.Fdatasync(int(f.Fd()))
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			f.Close()
		}
	}
	b.ResetTimer()
	start := time.Now()
	s, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	opened := time.Since(start)
	<-s.Recovered()
	rec := time.Since(start)
	b.StopTimer()
	defer s.Close()
	st := s.Stats()
	if st.Recipients != n {
		b.Fatalf("recovered %d recipients, want %d", st.Recipients, n)
	}
	rss := settledRSS()
	per := float64(rss-base) / n
	b.ReportMetric(rec.Seconds(), "recovery-s")
	b.ReportMetric(float64(opened.Milliseconds()), "open-ms")
	b.ReportMetric(per, "anon-B/rcpt")
	b.Logf("recovery of %d messages: Open returned in %v, index complete in %v; anon RSS %.1f B/rcpt (floor: 150)", n, opened, rec, per)
	runtime.KeepAlive(s)
}

// BenchmarkWheel measures an insert / pop-due / reschedule cycle on the
// index at 10,000 and at 1,000,000 deferred recipients. The clock moves
// so that about two recipients fall due per cycle: a new recipient is
// inserted, the due ones are popped, one is finished (so the size stays
// put: that is checked) and the others are deferred again. A second figure
// also reschedules a uniformly random waiting recipient, which at 1M is
// dominated by cache misses (40 MB of recipients), not by the wheel's work.
func BenchmarkWheel(b *testing.B) {
	run := func(size int, randomPick bool) float64 {
		now := time.Now().UnixNano()
		x := newIndex(now)
		rng := rand.New(rand.NewSource(1))
		vmta := []byte("pool1")
		addr := make([][]byte, 1000)
		for i := range addr {
			addr[i] = []byte(fmt.Sprintf("user@dom%d.example", i))
		}
		hour := int64(time.Hour)
		add := func(t int64) int32 {
			mi := x.allocMsg()
			x.m[mi] = msg{nrcpt: 1, left: 1, flags: mUsed}
			i := x.allocRcpts(1)
			x.m[mi].rcpt0 = i
			x.r[i] = rcpt{prev: i, nx: i, msg: mi, queue: x.queueFor(vmta, addr[rng.Intn(len(addr))]), status: uint8(Deferred), next: t}
			x.account(i, 1)
			x.schedule(i)
			return i
		}
		remove := func(i int32) {
			x.account(i, -1)
			x.unlink(i)
			mi := x.r[i].msg
			x.freeRcpts(i, 1)
			x.m[mi] = msg{}
			x.mfree = append(x.mfree, mi)
		}
		all := make([]int32, 0, size)
		for len(all) < size {
			all = append(all, add(now+1+rng.Int63n(hour)))
		}
		const cycles = 300_000
		step := 2 * hour / int64(size) // about two fall due per cycle
		// The garbage of building this index and the earlier runs is
		// collected now, not while the cycles are timed.
		runtime.GC()
		start := time.Now()
		wheelCycles(x, rng, now, step, cycles, add, remove, all, randomPick)
		el := time.Since(start)
		if n := x.nrcpts; n < size*99/100 || n > size*101/100+10 {
			b.Fatalf("queue drifted from %d to %d recipients", size, n)
		}
		return float64(el.Nanoseconds()) / cycles
	}
	// The best of five runs, the two sizes alternating: the machine is
	// shared, and a run slowed by other work says nothing about the
	// structure.
	best := func(randomPick bool) (small, big float64) {
		small, big = math.Inf(1), math.Inf(1)
		for k := 0; k < 5; k++ {
			small = min(small, run(10_000, randomPick))
			big = min(big, run(1_000_000, randomPick))
		}
		return small, big
	}
	b.ResetTimer()
	if n, err := strconv.Atoi(os.Getenv("SLUICE_WHEEL_SIZE")); err == nil {
		run(n, false) // one size once, for bench/wheel-misses.sh
		return
	}
	small, big := best(false)
	smallR, bigR := best(true)
	b.ReportMetric(small, "ns/cycle@10k")
	b.ReportMetric(big, "ns/cycle@1M")
	b.ReportMetric(big/small, "ratio")
	b.ReportMetric(bigR/smallR, "ratio-random-resched")
	b.Logf("insert/pop-due/reschedule cycle: %.0f ns at 10k, %.0f ns at 1M deferred (ratio %.2f, floor 1.3)", small, big, big/small)
	b.Logf("with a uniformly random recipient rescheduled too: %.0f ns at 10k, %.0f ns at 1M (ratio %.2f: cache misses)", smallR, bigR, bigR/smallR)
}

// wheelCycles is BenchmarkWheel's timed loop, a function of its own so
// that bench/wheel-misses.sh can count its cache misses alone.
//
//go:noinline
func wheelCycles(x *index, rng *rand.Rand, now, step int64, cycles int, add func(int64) int32, remove func(int32), all []int32, randomPick bool) {
	hour := int64(time.Hour)
	out := make([]int32, 0, 16)
	inserted, finished := 0, 0
	for c := 0; c < cycles; c++ {
		now += step
		add(now + 1 + rng.Int63n(hour)) // insert
		inserted++
		out = x.popDue(now, 4, out[:0]) // pop-due
		for _, i := range out {
			if finished < inserted {
				remove(i) // delivered
				finished++
				continue
			}
			// reschedule: deferred again
			x.account(i, -1)
			x.r[i].flags &^= rFlight
			x.r[i].next = now + 1 + rng.Int63n(hour)
			x.account(i, 1)
			x.schedule(i)
		}
		if randomPick {
			i := all[rng.Intn(len(all))]
			if x.r[i].flags&rWheel != 0 {
				x.unlink(i)
				x.r[i].next = now + 1 + rng.Int63n(hour)
				x.schedule(i)
			}
		}
	}
}

// buildMillion writes n one-recipient messages and 5 state records for
// each, without fdatasync and without compaction (so recovery has them all).
func buildMillion(b *testing.B, dir string, n int) {
	content := []byte("From: a@b.example\r\nSubject: bulk\r\n\r\nhello\r\n")
	s, err := Open(dir, Options{noSync: true, noCompact: true})
	if err != nil {
		b.Fatal(err)
	}
	<-s.Recovered()
	buildStart := time.Now()
	ids := make([]string, n)
	var wg sync.WaitGroup
	const writers = 16
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var batch Batch
			for i := w; i < n; i += writers {
				m := benchMsg(content, 1, i%1000)
				ids[i] = m.ID
				batch.Submit(m, false)
				if batch.Len() == 64 {
					if err := s.Commit(&batch); err != nil {
						b.Error(err)
						return
					}
					batch.Reset()
				}
			}
			if err := s.Commit(&batch); err != nil {
				b.Error(err)
			}
		}(w)
	}
	wg.Wait()
	// About five state records per message: two rounds of attempt and
	// deferral, and a hold/release pair on some.
	next := time.Now().Add(time.Hour)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var batch Batch
			for i := w; i < n; i += writers {
				for r := 0; r < 2; r++ {
					batch.Attempt(ids[i], 0, next)
					batch.Deferred(ids[i], 0, next.Add(time.Duration(rand.Intn(3600))*time.Second), "451 4.7.1 greylisted, try again later")
				}
				batch.Deferred(ids[i], 0, next.Add(time.Duration(rand.Intn(3600))*time.Second), "421 4.7.0 too many connections")
				if batch.Len() >= 256 {
					if err := s.Commit(&batch); err != nil {
						b.Error(err)
						return
					}
					batch.Reset()
				}
			}
			if err := s.Commit(&batch); err != nil {
				b.Error(err)
			}
		}(w)
	}
	wg.Wait()
	st := s.Stats()
	b.Logf("built %d messages, %d recipients, %d segments in %v; anon RSS %d MiB", st.Messages, st.Recipients, st.Segments, time.Since(buildStart).Round(time.Millisecond), settledRSS()>>20)
	s.Close()
}

// BenchmarkCompactionStall is one writer appending 2 KiB messages while
// three mostly finished segments (two full ones of 64 MiB) are compacted:
// 45% of each is live and carried forward: its append latency against the same writer's with
// no compaction running, both in one run. Recovery is held with its gate
// for the baseline: compaction starts when recovery ends.
func BenchmarkCompactionStall(b *testing.B) {
	dir := b.TempDir()
	content := make([]byte, 2048)
	s, err := Open(dir, Options{noSync: true, noCompact: true})
	if err != nil {
		b.Fatal(err)
	}
	<-s.Recovered()
	// Enough for two sealed segments and part of a third.
	const n = 70000
	var batch Batch
	var ids []string
	for i := 0; i < n; i++ {
		m := benchMsg(content, 1, i%1000)
		ids = append(ids, m.ID)
		batch.Submit(m, false)
		if batch.Len() == 256 || i == n-1 {
			if err := s.Commit(&batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	for i, id := range ids {
		if i%20 < 11 {
			batch.Delivered(id, 0, "250 ok")
		}
		if batch.Len() == 1000 || i == n-1 {
			if err := s.Commit(&batch); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}

	gate := make(chan struct{})
	s, err = Open(dir, Options{recoverGate: gate})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.mu.Lock()
	firstNew := s.active.seq // the segments before it are the old ones
	s.mu.Unlock()
	old := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		k := 0
		for seq := range s.segs {
			if seq < firstNew {
				k++
			}
		}
		return k
	}
	appendFor := func(done func(int) bool) []time.Duration {
		var ds []time.Duration
		for i := 0; !done(i); i++ {
			m := benchMsg(content, 1, i%1000)
			t := time.Now()
			if err := s.Submit(m); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(t))
		}
		return ds
	}
	b.ResetTimer()
	base := appendFor(func(i int) bool { return i == 2000 })
	close(gate)
	<-s.Recovered()
	start := time.Now()
	during := appendFor(func(int) bool {
		// Done once every old segment is compacted away.
		return old() == 0 || time.Since(start) > time.Minute
	})
	took := time.Since(start)
	b.StopTimer()
	if k := old(); k > 0 {
		b.Fatalf("compaction did not finish in a minute: %d old segments left", k)
	}
	b.ReportMetric(float64(percentile(during, 50))/float64(percentile(base, 50)), "p50-ratio")
	b.ReportMetric(float64(percentile(during, 100).Microseconds()), "max-µs")
	b.ReportMetric(took.Seconds(), "compaction-s")
	b.Logf("one writer, no compaction: %d appends, p50 %v p99 %v max %v", len(base), percentile(base, 50), percentile(base, 99), percentile(base, 100))
	b.Logf("one writer, while 3 segments are compacted (%.1fs): %d appends, p50 %v p99 %v max %v", took.Seconds(), len(during), percentile(during, 50), percentile(during, 99), percentile(during, 100))
}

// BenchmarkAppendDuringRoll is one writer appending 256 KiB messages to a
// new spool, so that a segment fills every 256 appends and the next one
// is made (zero-filled) beside the writer: its append latency.
func BenchmarkAppendDuringRoll(b *testing.B) {
	dir := b.TempDir()
	s := openBench(b, dir, Options{})
	content := make([]byte, 256<<10)
	const n = 2000
	msgs := make([]*Message, n)
	for i := range msgs {
		msgs[i] = benchMsg(content, 1, i%1000)
	}
	ds := make([]time.Duration, n)
	b.ResetTimer()
	for i, m := range msgs {
		t := time.Now()
		if err := s.Submit(m); err != nil {
			b.Fatal(err)
		}
		ds[i] = time.Since(t)
	}
	b.StopTimer()
	slow := 0
	for _, d := range ds {
		if d > 10*time.Millisecond {
			slow++
		}
	}
	p50, p99, worst := percentile(ds, 50), percentile(ds, 99), percentile(ds, 100)
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(worst.Microseconds()), "max-µs")
	b.ReportMetric(float64(slow), "over-10ms")
	b.Logf("one writer, 256 KiB appends, new segments made meanwhile: p50 %v p99 %v max %v; %d of %d over 10 ms", p50, p99, worst, slow, n)
}
