package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hubsmith/hub/gateway"
	"github.com/hubsmith/hub/hubtest"
)

// browserWait bounds each step a browser test waits for.
const browserWait = 15 * time.Second

// chromium finds a Chromium binary ($HUB_CHROMIUM, else chromium on the
// PATH as Debian installs it); tests that need one skip without it.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HUB_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium binary (apt-get install chromium; .ci/run installs it)")
	return ""
}

// browser starts a headless Chromium for the test, with no network but
// loopback in use and a profile of its own, and returns its context.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run runs browser actions bounded by browserWait, failing the test with
// what was being done.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		body, _ := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("browser: %s: %v\npage text:\n%s", what, err, body)
	}
}

// waitJS polls a JavaScript expression in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	run(t, ctx, what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserWait)))
}

// setInput sets a form field's value the way typing does (an input
// event), which Preact listens to.
func setInput(sel, value string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => {
		const el = document.querySelector(%q);
		el.value = %q;
		el.dispatchEvent(new Event('input', {bubbles: true}));
		return true;
	})()`, sel, value))
}

// screenshot saves a PNG of the viewport, or of the full page, under the test's temporary directory,
// and in $HUB_SCREENSHOT_DIR when set, and returns its path.
func screenshot(t *testing.T, ctx context.Context, name string, full bool) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, browserWait)
	defer cancel()
	shot := chromedp.CaptureScreenshot()
	if full {
		shot = chromedp.FullScreenshot(100)
	}
	png, err := chromedp.Run(sctx, shot)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 1000 {
		t.Fatalf("screenshot %s: %d bytes", name, len(png))
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("HUB_SCREENSHOT_DIR"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot %s: %d bytes", p, len(png))
	return p
}

// TestDashboard drives the dashboard in headless Chromium against a
// running hub: a device registered and connected over MQTT shows online,
// readings it publishes reach its chart and the tail, a command sent from
// the form comes back with the device's reply, and the page is usable at
// a phone's width.
func TestDashboard(t *testing.T) {
	ctx := browser(t, 1280, 900)
	h := hubtest.Start(t)
	base := "http://" + loopback(t, h.Addr(t, "rest.http"))
	mqttAddr := loopback(t, h.Addr(t, "mqtt.mqtt"))

	if s, b, _ := httpDo(t, http.MethodPost, base+"/api/v1/devices", "application/json",
		`{"id":"therm1","name":"Kitchen thermometer","protocol":"mqtt","password":"thermpw"}`); s != http.StatusCreated {
		t.Fatalf("add device: %d %s", s, b)
	}

	run(t, ctx, "open the dashboard", chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#health`)),
		chromedp.WaitVisible(chromedp.CSS(`.presence.offline[data-device="therm1"]`)))
	waitJS(t, ctx, "the live stream", `document.getElementById('live-state').textContent === 'live'`)

	// The device comes online and answers commands.
	dev := dialMQTT(t, mqttAddr, "therm1", "therm1", "thermpw", true)
	tok := dev.Subscribe("devices/therm1/commands/+", 1, func(c paho.Client, m paho.Message) {
		var req struct {
			ID     string          `json:"id"`
			Params json.RawMessage `json:"params"`
		}
		if json.Unmarshal(m.Payload(), &req) != nil || req.ID == "" {
			return
		}
		name := strings.TrimPrefix(m.Topic(), "devices/therm1/commands/")
		c.Publish("devices/therm1/responses/"+req.ID, 1, false, fmt.Sprintf(`{"done":%q,"echo":%s}`, name, req.Params))
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device subscribe: %v", tok.Error())
	}
	run(t, ctx, "the device shows online", chromedp.WaitVisible(chromedp.CSS(`.presence.online[data-device="therm1"]`)))

	// Readings over MQTT: a plain number and a JSON object.
	for i, v := range []string{"21.5", "22", "22.5"} {
		dev.publish(t, "devices/therm1/temp", 1, i == 2, v)
	}
	dev.publish(t, "devices/therm1/env", 0, false, `{"hum":{"rel":41.5},"ok":true}`)
	dev.publish(t, "devices/therm1/senml", 0, false, `[{"bn":"therm1/","n":"co2","u":"ppm","v":612},{"n":"label","vs":"kitchen"}]`)
	waitJS(t, ctx, "the temperature chart", `(() => {
		const c = document.querySelector('.chart[data-topic="devices/therm1/temp"]');
		return !!c && !!c.querySelector('canvas') && c.querySelector('.last-value').textContent.includes('value=22.5')
			&& /^3 points · no history yet/.test(c.querySelector('small.muted').textContent);
	})()`)
	waitJS(t, ctx, "the JSON field's chart", `(() => {
		const c = document.querySelector('.chart[data-topic="devices/therm1/env"]');
		return !!c && c.querySelector('.last-value').textContent.includes('hum.rel=41.5');
	})()`)
	waitJS(t, ctx, "the SenML record's chart", `(() => {
		const c = document.querySelector('.chart[data-topic="devices/therm1/senml"]');
		return !!c && c.querySelector('.last-value').textContent.trim() === 'therm1/co2=612';
	})()`)
	waitJS(t, ctx, "the last reading in the devices table", `(() => {
		const r = document.querySelector('[data-device-reading="therm1"]');
		return !!r && r.textContent.includes('senml') && r.textContent.includes('612');
	})()`)

	// The tail, filtered.
	run(t, ctx, "filter the tail", setInput(`#tail-filter`, "devices/therm1/+"))
	waitJS(t, ctx, "readings in the tail", `(() => {
		const rows = [...document.querySelectorAll('#tail tbody tr')];
		return rows.length === 5 && rows.every(r => r.dataset.topic.startsWith('devices/therm1/'))
			&& rows.some(r => r.textContent.includes('22.5'));
	})()`)
	// The filter's own stream at the hub: a new reading arrives once.
	waitJS(t, ctx, "the tail's own stream", `[...document.querySelectorAll('#clients tr')].some(r => r.textContent === 'rest2')`)
	dev.publish(t, "devices/therm1/temp", 0, false, "23")
	waitJS(t, ctx, "a new reading in the filtered tail", `(() => {
		const rows = [...document.querySelectorAll('#tail tbody tr')];
		return rows.length === 6 && rows[0].dataset.topic === 'devices/therm1/temp' && rows[0].textContent.endsWith('23');
	})()`)
	run(t, ctx, "a filter that is none", setInput(`#tail-filter`, "a/#/b"))
	waitJS(t, ctx, "the filter refused", `(document.querySelector('#tail p.error')?.textContent ?? '').includes('not a topic filter')`)
	run(t, ctx, "filter the tail to nothing", setInput(`#tail-filter`, "other/#"))
	waitJS(t, ctx, "an empty tail", `document.querySelectorAll('#tail tbody tr').length === 0`)
	run(t, ctx, "filter the tail back", setInput(`#tail-filter`, "#"))

	// A command from the form, answered by the device.
	run(t, ctx, "fill the command form",
		setInput(`#command input[name=device]`, "therm1"),
		setInput(`#command input[name=command]`, "blink"),
		setInput(`#command textarea[name=params]`, `{"times":3}`),
		setInput(`#command input[name=timeout]`, "5s"),
		chromedp.Click(chromedp.CSS(`#command button[type=submit]`)))
	waitJS(t, ctx, "the device's reply", `(() => {
		const r = document.querySelector('#command pre.result.ok');
		return !!r && r.textContent.includes('"done": "blink"') && r.textContent.includes('"times": 3');
	})()`)
	// The command and its reply went over the bus: the tail shows both.
	waitJS(t, ctx, "the command in the tail", `[...document.querySelectorAll('#tail tbody tr')].some(r => r.dataset.topic === 'devices/therm1/commands/blink')`)

	// The overview's traffic and clients.
	waitJS(t, ctx, "MQTT clients counted", `[...document.querySelectorAll('#clients tr')].some(r => r.textContent === 'mqtt1')`)
	waitJS(t, ctx, "MQTT traffic at QoS 1", `[...document.querySelectorAll('#traffic tbody tr')].some(r => r.cells[0].textContent === 'mqtt' && r.cells[1].textContent === '1')`)

	// The other forms: publish, add a device and a user, set an ACL.
	run(t, ctx, "publish from the form",
		setInput(`#publish input[name=topic]`, "home/lamp"),
		setInput(`#publish textarea[name=payload]`, "on"),
		chromedp.Click(chromedp.CSS(`#publish button[type=submit]`)))
	waitJS(t, ctx, "the publish in the tail", `[...document.querySelectorAll('#tail tbody tr')].some(r => r.dataset.topic === 'home/lamp' && r.textContent.endsWith('on'))`)
	run(t, ctx, "add a device from the form",
		setInput(`#add-device input[name=id]`, "lamp2"),
		setInput(`#add-device input[name=name]`, "Hall lamp"),
		chromedp.Click(chromedp.CSS(`#add-device button[type=submit]`)))
	waitJS(t, ctx, "the new device listed", `!!document.querySelector('.presence.offline[data-device="lamp2"]')`)
	run(t, ctx, "add a user from the form",
		setInput(`#add-user input[name=name]`, "bob"),
		setInput(`#add-user input[name=password]`, "bobpw"),
		chromedp.Click(chromedp.CSS(`#add-user button[type=submit]`)))
	waitJS(t, ctx, "the user added", `(document.querySelector('#add-user pre.result.ok')?.textContent ?? '') === 'user bob added'`)
	run(t, ctx, "a malformed ACL",
		setInput(`#acl input[name=user]`, "bob"),
		setInput(`#acl textarea[name=rules]`, "permit everything"),
		chromedp.Click(chromedp.CSS(`#acl button[type=submit]`)))
	waitJS(t, ctx, "the ACL refused", `(document.querySelector('#acl pre.result.error')?.textContent ?? '').startsWith('line 1:')`)
	run(t, ctx, "set an ACL from the form",
		setInput(`#acl textarea[name=rules]`, "allow subscribe home/#\ndeny all #"),
		chromedp.Click(chromedp.CSS(`#acl button[type=submit]`)))
	waitJS(t, ctx, "the ACL saved", `(document.querySelector('#acl pre.result.ok')?.textContent ?? '').includes('2 rules')`)
	if s, b, _ := httpDo(t, http.MethodGet, base+"/api/v1/users/bob/acl", "", ""); s != http.StatusOK ||
		b != `[{"action":"subscribe","filter":"home/#","allow":true},{"action":"all","filter":"#","allow":false}]` {
		t.Errorf("bob's ACL: %d %s", s, b)
	}
	if s, b, _ := httpDo(t, http.MethodPost, "http://bob:bobpw@"+loopback(t, h.Addr(t, "rest.http"))+"/api/v1/topics/home/x", "text/plain", "1"); s != http.StatusForbidden {
		t.Errorf("bob publishes against his ACL: %d %s", s, b)
	}

	screenshot(t, ctx, "dashboard.png", true)

	// A phone: nothing wider than the screen, and the sections still there.
	run(t, ctx, "phone viewport", chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	waitJS(t, ctx, "no horizontal scrolling at 375 px", `document.documentElement.scrollWidth <= 375`)
	waitJS(t, ctx, "the chart fits", `document.querySelector('.chart').getBoundingClientRect().right <= 375`)
	screenshot(t, ctx, "dashboard-phone.png", true)
	screenshot(t, ctx, "dashboard-phone-top.png", false)
	run(t, ctx, "scroll to the charts", chromedp.Evaluate[chromedp.Void](`document.getElementById('charts').scrollIntoView()`))
	screenshot(t, ctx, "dashboard-phone-charts.png", false)
}

// TestDashboardOffLoopback holds the dashboard to the REST API's rule off
// loopback: without a token only the sign-in page and its assets are
// served, the app's code and every API answer need one; the sign-in form
// gets one and opens the app.
func TestDashboardOffLoopback(t *testing.T) {
	h := hubtest.Start(t, func(c *gateway.Config) { c.HTTP.Addr = "0.0.0.0:0" })
	base := "http://" + loopback(t, h.Addr(t, "rest.http"))
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path, cookie, auth string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: "hub_token", Value: cookie})
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	token := func(name, pw string) string {
		t.Helper()
		s, b, _ := httpDo(t, http.MethodPost, base+"/api/v1/tokens", "application/json", fmt.Sprintf(`{"name":%q,"password":%q}`, name, pw))
		var tk struct{ Token string }
		if s != http.StatusCreated || json.Unmarshal([]byte(b), &tk) != nil || tk.Token == "" {
			t.Fatalf("token for %s: %d %s", name, s, b)
		}
		return tk.Token
	}
	admin, alice := token("admin", "adminpw"), token("alice", "alicepw")

	_, login, _ := get("/login", "", "")
	_, app, _ := get("/", admin, "")
	appJS := assetIn(t, app, "index-")
	loginJS := assetIn(t, login, "login-")
	for _, c := range []struct {
		name, path, cookie, auth string
		status                   int
		has                      string
	}{
		{"app without token", "/", "", "", http.StatusSeeOther, ""},
		{"deep link without token", "/charts", "", "", http.StatusSeeOther, ""},
		{"app with a bad cookie", "/", "nope", "", http.StatusSeeOther, ""},
		{"sign-in page", "/login", "", "", http.StatusOK, `id="login"`},
		{"sign-in page's code", loginJS, "", "", http.StatusOK, ""},
		{"app's code without token", appJS, "", "", http.StatusUnauthorized, "sign in"},
		{"app with cookie", "/", admin, "", http.StatusOK, `<div id="app">`},
		{"app's code with cookie", appJS, admin, "", http.StatusOK, ""},
		{"app with basic auth", "/", "", "Basic YWRtaW46YWRtaW5wdw==", http.StatusOK, `<div id="app">`},
		{"overview without token", "/api/v1/admin/overview", "", "", http.StatusUnauthorized, "error"},
		{"overview with the cookie only", "/api/v1/admin/overview", admin, "", http.StatusUnauthorized, "error"},
		{"overview as admin", "/api/v1/admin/overview", "", "Bearer " + admin, http.StatusOK, `"listeners"`},
		{"overview as a user", "/api/v1/admin/overview", "", "Bearer " + alice, http.StatusForbidden, "admin"},
		{"unknown API path", "/api/v1/nothing", admin, "", http.StatusNotFound, `"error"`},
		{"healthz", "/healthz", "", "", http.StatusOK, `"status":"ok"`},
	} {
		s, b, hdr := get(c.path, c.cookie, c.auth)
		if s != c.status || !strings.Contains(b, c.has) {
			t.Errorf("%s: GET %s: %d %.200q, want %d with %q", c.name, c.path, s, b, c.status, c.has)
		}
		if s == http.StatusSeeOther && !strings.HasPrefix(hdr.Get("Location"), "/login?next=") {
			t.Errorf("%s: redirect to %q, want /login?next=", c.name, hdr.Get("Location"))
		}
	}

	// The sign-in form in a browser.
	ctx := browser(t, 1024, 768)
	run(t, ctx, "open the dashboard", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`#login`)))
	run(t, ctx, "a wrong password",
		chromedp.SendKeys(chromedp.CSS(`#login input[name=name]`), "admin"),
		chromedp.SendKeys(chromedp.CSS(`#login input[name=password]`), "wrong"),
		chromedp.Click(chromedp.CSS(`#login button`)))
	waitJS(t, ctx, "the refusal", `document.getElementById('login-error').textContent.includes('bad username or password')`)
	run(t, ctx, "the right password",
		setInput(`#login input[name=password]`, "adminpw"),
		chromedp.Click(chromedp.CSS(`#login button`)),
		chromedp.WaitVisible(chromedp.CSS(`#health`)))
	waitJS(t, ctx, "the live stream with the token", `document.getElementById('live-state').textContent === 'live'`)
	waitJS(t, ctx, "the failed login alarm", `document.getElementById('alarms').textContent.includes('logins refused')`)

	// A next= that leaves the hub is not followed.
	run(t, ctx, "sign in again with a foreign next",
		chromedp.Navigate(base+`/login?next=%2F%5Cevil.example%2F`), chromedp.WaitVisible(chromedp.CSS(`#login`)),
		setInput(`#login input[name=name]`, "admin"), setInput(`#login input[name=password]`, "adminpw"),
		chromedp.Click(chromedp.CSS(`#login button`)), chromedp.WaitVisible(chromedp.CSS(`#health`)))
	waitJS(t, ctx, "still on the hub", fmt.Sprintf(`location.href === %q`, base+"/"))
}

// assetIn finds the /assets/ path of a page's script whose name starts
// with prefix.
func assetIn(t *testing.T, page, prefix string) string {
	t.Helper()
	i := strings.Index(page, `src="/assets/`+prefix)
	if i < 0 {
		t.Fatalf("no %s script in %.300q", prefix, page)
	}
	rest := page[i+len(`src="`):]
	return rest[:strings.IndexByte(rest, '"')]
}
