/*
 * A stand-in for luasystem's C module `system.core`, for the Lua 5.5 test host only.
 *
 * tools/build-lua55.sh compiles luasystem itself from Debian's source package; this
 * file is used only when that package's source cannot be downloaded, and the script
 * says so. It offers the three functions busted and the specs use, with luasystem's
 * meaning: gettime() (wall-clock seconds since the epoch, a float), monotime()
 * (seconds of a monotonic clock, a float) and sleep(seconds).
 */

#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep */

#include <errno.h>
#include <math.h>
#include <time.h>

#include "lua.h"
#include "lauxlib.h"

static lua_Number seconds_of(const struct timespec *ts) {
  return (lua_Number)ts->tv_sec + (lua_Number)ts->tv_nsec / 1e9;
}

static int clock_seconds(lua_State *L, clockid_t clock) {
  struct timespec ts;
  if (clock_gettime(clock, &ts) != 0)
    return luaL_error(L, "clock_gettime failed");
  lua_pushnumber(L, seconds_of(&ts));
  return 1;
}

static int l_gettime(lua_State *L) {
  return clock_seconds(L, CLOCK_REALTIME);
}

static int l_monotime(lua_State *L) {
  return clock_seconds(L, CLOCK_MONOTONIC);
}

/* Sleeps the whole time asked, resuming after a signal interrupts the wait. */
static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  struct timespec want;
  if (!(s > 0))
    return 0;
  want.tv_sec = (time_t)floor(s);
  want.tv_nsec = (long)((s - floor(s)) * 1e9);
  if (want.tv_nsec > 999999999L)
    want.tv_nsec = 999999999L;
  while (nanosleep(&want, &want) != 0 && errno == EINTR) {
  }
  return 0;
}

int luaopen_system_core(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"gettime", l_gettime},
    {"monotime", l_monotime},
    {"sleep", l_sleep},
    {NULL, NULL},
  };
  luaL_newlib(L, functions);
  lua_pushliteral(L, "llthreads stand-in for LuaSystem (tools/lua55/system_core.c)");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
