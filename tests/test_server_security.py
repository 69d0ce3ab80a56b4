"""Files stay in their folders; tokens off loopback; cross-origin requests refused; CORS opt-in."""
import os
import re

import aiohttp
import pytest
import yarl

from tests.server_harness import ServerProc, run


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A data folder with files to serve and symlinks that point inside and outside, and an editor folder."""
    base = tmp_path_factory.mktemp("sec")
    data, web = base / "data", base / "web"
    (data / "output" / "sub").mkdir(parents=True)
    (data / "output" / "ok.png").write_bytes(b"\x89PNG fake")
    (data / "output" / "sub" / "deep.txt").write_text("deep")
    (base / "secret.txt").write_text("top secret")
    os.symlink(base / "secret.txt", data / "output" / "leak.txt")
    os.symlink(base, data / "output" / "escape")
    os.symlink(data / "output" / "ok.png", data / "output" / "alias.png")
    (web / "node_modules" / "lite").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>editor</title>")
    (web / "app.js").write_text("console.log('editor')")
    (web / "node_modules" / "lite" / "lite.js").write_text("export const lite = 1")
    os.symlink(base / "secret.txt", web / "leak.js")
    return base, data, web


@pytest.fixture(scope="module")
def server(layout):
    base, data, web = layout
    proc = ServerProc(data, "--cors-origin", "http://allowed.example", web_dir=web).start()
    yield proc
    proc.stop()


async def fetch(url, method="GET", **kwargs):
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url, **kwargs) as r:
            return r.status, await r.read(), r.headers


@pytest.mark.parametrize("params,status", [
    ({"filename": "ok.png"}, 200),
    ({"filename": "deep.txt", "subfolder": "sub"}, 200),
    ({"filename": "alias.png"}, 200),  # a symlink that stays inside is fine
    ({"filename": "../secret.txt"}, 403),
    ({"filename": "secret.txt", "subfolder": ".."}, 403),
    ({"filename": "secret.txt", "subfolder": "sub/../.."}, 403),
    ({"filename": "/etc/passwd"}, 403),
    ({"filename": "passwd", "subfolder": "/etc"}, 403),
    ({"filename": "leak.txt"}, 403),  # symlink to a file outside
    ({"filename": "secret.txt", "subfolder": "escape"}, 403),  # symlinked folder outside
    ({"filename": "..\\secret.txt"}, 403),
    ({"filename": "ok.png\x00.txt"}, 403),
    ({"filename": "sub"}, 404),  # a folder is not a file
])
def test_view_stays_in_its_folder(server, params, status):
    code, body, headers = run(fetch(server.url + "/view", params=params))
    assert code == status, body
    assert b"top secret" not in body
    if code == 200:
        assert headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in headers["Content-Security-Policy"]


@pytest.mark.parametrize("path,status,needle", [
    ("/", 200, b"<title>editor</title>"),
    ("/index.html", 200, b"<title>editor</title>"),
    ("/app.js", 200, b"console.log"),
    ("/lib/lite/lite.js", 200, b"export const lite"),
    ("/node_modules/lite/lite.js", 200, b"export const lite"),
    ("/leak.js", 403, b"path refused"),
    ("/%2e%2e/secret.txt", (403, 404), b'"error"'),  # refused or normalised away, never served
    ("/lib/..%2f..%2fsecret.txt", (403, 404), b'"error"'),
    ("/missing.js", 404, b"not_found"),
])
def test_editor_files(server, path, status, needle):
    code, body, headers = run(fetch(yarl.URL(server.url + path, encoded=True)))
    assert code in (status if isinstance(status, tuple) else (status,)) and needle in body, body
    assert b"top secret" not in body
    if path.endswith(".js") and code == 200:
        assert headers["Content-Type"].startswith("text/javascript")


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Host": "evil.example"},  # DNS rebinding: a loopback server answers loopback names only
])
def test_cross_origin_browser_requests_are_refused(server, headers):
    code, body, _ = run(fetch(server.url + "/prompt", "POST", json={"prompt": {}}, headers=headers))
    assert code == 403 and b"refused" in body
    code, _, _ = run(fetch(server.url + "/queue", headers=headers))
    assert code == 403


def test_websocket_from_another_origin_is_refused(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await s.ws_connect(server.url + "/ws?clientId=x", headers={"Origin": "http://evil.example"})
            assert info.value.status == 403
            ws = await s.ws_connect(server.url + "/ws?clientId=x", headers={"Origin": server.url})
            assert (await ws.receive_json())["type"] == "status"
            await ws.close()
    run(main())


def test_same_origin_and_cors_origin_are_allowed(server):
    code, _, headers = run(fetch(server.url + "/queue", headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"}))
    assert code == 200 and "Access-Control-Allow-Origin" not in headers
    code, _, headers = run(fetch(server.url + "/queue", headers={"Origin": "http://allowed.example",
                                                                 "Sec-Fetch-Site": "cross-site"}))
    assert code == 200 and headers["Access-Control-Allow-Origin"] == "http://allowed.example"
    code, _, headers = run(fetch(server.url + "/prompt", "OPTIONS", headers={
        "Origin": "http://allowed.example", "Access-Control-Request-Method": "POST"}))
    assert code == 204 and "POST" in headers["Access-Control-Allow-Methods"]
    code, _, _ = run(fetch(server.url + "/prompt", "OPTIONS", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}))
    assert code == 403


def test_token_required_off_loopback(tmp_path):
    server = ServerProc(tmp_path / "data", "--listen", "0.0.0.0").start()
    try:
        token = re.search(r"\?token=(\S+)", server.token_line).group(1)
        url = "http://127.0.0.1:" + server.url.rsplit(":", 1)[1]
        code, body, headers = run(fetch(url + "/queue"))
        assert code == 401 and headers["WWW-Authenticate"] == "Bearer" and b"token" in body
        assert run(fetch(url + "/queue", headers={"Authorization": "Bearer wrong"}))[0] == 401
        assert run(fetch(url + "/queue", headers={"Authorization": f"Bearer {token}"}))[0] == 200
        assert run(fetch(url + "/system_stats", params={"token": token}))[0] == 200

        async def browser_and_ws():
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await s.ws_connect(url + "/ws?clientId=t")
                assert info.value.status == 401
                async with s.get(url + "/", params={"token": token}) as r:  # opening the editor sets a cookie
                    assert r.status == 200
                async with s.get(url + "/queue") as r:
                    assert r.status == 200
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"{url}/ws?clientId=t&token={token}")
                assert (await ws.receive_json())["data"]["sid"] == "t"
                await ws.close()
        run(browser_and_ws())
    finally:
        server.stop()


def test_explicit_token_on_loopback(tmp_path):
    server = ServerProc(tmp_path / "data", "--auth-token", "s3cret").start()
    try:
        assert run(fetch(server.url + "/history"))[0] == 401
        assert run(fetch(server.url + "/history", headers={"Authorization": "Bearer s3cret"}))[0] == 200
    finally:
        server.stop()
