/*
 * A small standalone Lua 5.5 interpreter for this project's tests.
 *
 * Debian has no lua5.5 package and the Lua sources in the `lua-src` crate come
 * without the stock interpreter, so tools/build-lua55.sh links this file with those
 * sources into build/lua5.5/bin/lua5.5. It does what the tests, busted and luarocks
 * need from `lua`, no more:
 *
 *   lua5.5 [options] [script [args...]]
 *     -e CODE     run CODE
 *     -l NAME     require NAME into the global NAME (-l G=NAME: into the global G)
 *     -W          turn warnings on
 *     -E          ignore the LUA_* environment variables
 *     -v          print the version
 *     --          stop handling options
 *     -           run standard input as the script
 *
 * The script sees its arguments as `...` and in the global table `arg` (arg[0] is
 * the script, negative indices the interpreter and its options; with no script,
 * arg[0] is the interpreter and the options follow it). Before the
 * options run, LUA_INIT_5_5 (or, unset, LUA_INIT) runs: "@FILE" runs FILE, anything
 * else is Lua code. With no script and no -e, standard input is the script. An
 * error prints "PROGRAM: MESSAGE" and a traceback on stderr and exits 1; the state
 * is closed before exiting (finalizers and C modules' cleanup run), also on errors.
 * There is no interactive mode. As the stock interpreter (5.5.0's lua.c, read for its
 * behaviour): LUA_INIT runs with warnings as luaL_newstate leaves them (on, in 5.5),
 * then warnings are off unless -W turns them on; the collector is stopped while the
 * libraries open and `arg` is built, then runs in generational mode. The program is
 * linked with --export-dynamic, so C modules it loads find the Lua API in it.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

static const char *progname = "lua5.5";

/* One thing to do, from the command line, in the order given. */
enum step_kind { STEP_CODE, STEP_REQUIRE, STEP_WARN_ON };

struct step {
  enum step_kind kind;
  const char *text;
};

struct options {
  struct step *steps;
  int nsteps;
  int ignore_env;
  int print_version;
  int script; /* index in argv of the script ("-" for stdin), 0 when none */
  int argc;
  char **argv;
};

/* Prints `msg` as the interpreter's error report. */
static void report_text(const char *msg) {
  fprintf(stderr, "%s: %s\n", progname, msg);
  fflush(stderr);
}

/* Reports the error value on top of the stack when `status` is an error; pops it. */
static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL)
      msg = "(error object is not a string)";
    report_text(msg);
    lua_pop(L, 1);
  }
  return status;
}

/* Message handler: the error as text (through __tostring when it has one), with the
 * traceback of the code that raised it. */
static int add_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Calls the function below its `nargs` arguments with the traceback handler. */
static int call_traced(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;
  int status;
  lua_pushcfunction(L, add_traceback);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status;
}

static int run_chunk(lua_State *L, int status) {
  if (status == LUA_OK)
    status = call_traced(L, 0, 0);
  return report(L, status);
}

static int run_string(lua_State *L, const char *code, const char *name) {
  return run_chunk(L, luaL_loadbuffer(L, code, strlen(code), name));
}

static int run_file(lua_State *L, const char *path) {
  return run_chunk(L, luaL_loadfile(L, path));
}

/* -l [GLOBAL=]MODULE: require MODULE and store what it returns in GLOBAL (by default
 * the module's name). */
static int require_into_global(lua_State *L, const char *spec) {
  const char *eq = strchr(spec, '=');
  const char *module = eq ? eq + 1 : spec;
  int status;
  if (eq)
    lua_pushlstring(L, spec, (size_t)(eq - spec));
  else
    lua_pushstring(L, spec);
  lua_getglobal(L, "require");
  lua_pushstring(L, module);
  status = call_traced(L, 1, 1);
  if (status != LUA_OK) {
    lua_remove(L, -2); /* the global's name */
    return report(L, status);
  }
  lua_setglobal(L, lua_tostring(L, -2));
  lua_pop(L, 1);
  return LUA_OK;
}

/* LUA_INIT_5_5, or LUA_INIT when that is unset. */
static int run_init(lua_State *L) {
  const char *name = "=LUA_INIT_5_5";
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv(name + 1);
  }
  if (init == NULL)
    return LUA_OK;
  if (init[0] == '@')
    return run_file(L, init + 1);
  return run_string(L, init, name);
}

/* The global `arg`: argv[script] at 0, what comes before it at negative indices;
 * without a script, the interpreter at 0 and its options after it. */
static void make_arg_table(lua_State *L, const struct options *o) {
  int zero = o->script;
  int i;
  lua_createtable(L, o->argc > zero ? o->argc - zero : 0, zero + 1);
  for (i = 0; i < o->argc; i++) {
    lua_pushstring(L, o->argv[i]);
    lua_rawseti(L, -2, (lua_Integer)i - zero);
  }
  lua_setglobal(L, "arg");
}

/* Runs the script with its arguments (the positive entries of `arg`). */
static int run_script(lua_State *L, const struct options *o) {
  const char *path = o->script ? o->argv[o->script] : "-";
  int nargs = 0, status, i;
  status = luaL_loadfile(L, strcmp(path, "-") == 0 ? NULL : path);
  if (status != LUA_OK)
    return report(L, status);
  if (o->script) {
    nargs = o->argc - o->script - 1;
    luaL_checkstack(L, nargs + 3, "too many arguments to script");
    for (i = o->script + 1; i < o->argc; i++)
      lua_pushstring(L, o->argv[i]);
  }
  return report(L, call_traced(L, nargs, 0));
}

static void usage(const char *bad) {
  fprintf(stderr, "%s: unrecognised option '%s'\n", progname, bad);
  fprintf(stderr,
          "usage: %s [-e code] [-l [global=]module] [-W] [-E] [-v] [--] [script [args]]\n",
          progname);
  fflush(stderr);
}

/* Reads the options; returns 0 on a bad command line. */
static int parse_options(struct options *o) {
  int i;
  for (i = 1; i < o->argc; i++) {
    const char *a = o->argv[i];
    if (a[0] != '-' || strcmp(a, "-") == 0) {
      o->script = i;
      return 1;
    }
    if (strcmp(a, "--") == 0) {
      if (i + 1 < o->argc)
        o->script = i + 1;
      return 1;
    }
    switch (a[1]) {
      case 'e':
      case 'l': {
        const char *text = a[2] ? a + 2 : o->argv[++i];
        if (text == NULL) {
          fprintf(stderr, "%s: '%s' needs an argument\n", progname, a);
          return 0;
        }
        o->steps[o->nsteps].kind = a[1] == 'e' ? STEP_CODE : STEP_REQUIRE;
        o->steps[o->nsteps].text = text;
        o->nsteps++;
        break;
      }
      case 'W':
      case 'E':
      case 'v':
        if (a[2] != '\0') {
          usage(a);
          return 0;
        }
        if (a[1] == 'W') {
          o->steps[o->nsteps].kind = STEP_WARN_ON;
          o->steps[o->nsteps].text = NULL;
          o->nsteps++;
        } else if (a[1] == 'E') {
          o->ignore_env = 1;
        } else {
          o->print_version = 1;
        }
        break;
      default:
        usage(a);
        return 0;
    }
  }
  return 1;
}

/* Everything that may raise runs here, under lua_pcall: the libraries, `arg`, the
 * init code, the options and the script. Returns (as a boolean) whether all went
 * well; errors are reported where they happen. */
static int protected_main(lua_State *L) {
  const struct options *o = (const struct options *)lua_touserdata(L, 1);
  int i, ran_code = 0;
  if (o->ignore_env) {
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  make_arg_table(L, o);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN);
  if (o->print_version) {
    fputs(LUA_COPYRIGHT "\n", stdout);
    fflush(stdout);
  }
  if (!o->ignore_env && run_init(L) != LUA_OK) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_warning(L, "@off", 0);
  for (i = 0; i < o->nsteps; i++) {
    int status = LUA_OK;
    switch (o->steps[i].kind) {
      case STEP_CODE:
        status = run_string(L, o->steps[i].text, "=(command line)");
        ran_code = 1;
        break;
      case STEP_REQUIRE:
        status = require_into_global(L, o->steps[i].text);
        break;
      case STEP_WARN_ON:
        lua_warning(L, "@on", 0);
        break;
    }
    if (status != LUA_OK) {
      lua_pushboolean(L, 0);
      return 1;
    }
  }
  if (o->script || (!ran_code && !o->print_version)) {
    if (run_script(L, o) != LUA_OK) {
      lua_pushboolean(L, 0);
      return 1;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

int main(int argc, char **argv) {
  struct options o;
  lua_State *L;
  int status, ok;
  if (argv[0] && argv[0][0])
    progname = argv[0];
  memset(&o, 0, sizeof o);
  o.argc = argc;
  o.argv = argv;
  o.steps = calloc((size_t)argc + 1, sizeof *o.steps);
  if (o.steps == NULL) {
    report_text("not enough memory");
    return EXIT_FAILURE;
  }
  if (!parse_options(&o)) {
    free(o.steps);
    return EXIT_FAILURE;
  }
  L = luaL_newstate();
  if (L == NULL) {
    report_text("cannot create state: not enough memory");
    free(o.steps);
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP);
  lua_pushcfunction(L, protected_main);
  lua_pushlightuserdata(L, &o);
  status = lua_pcall(L, 1, 1, 0);
  ok = lua_toboolean(L, -1);
  report(L, status);
  lua_close(L);
  free(o.steps);
  return (status == LUA_OK && ok) ? EXIT_SUCCESS : EXIT_FAILURE;
}
