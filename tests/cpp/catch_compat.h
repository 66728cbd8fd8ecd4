// One include for the test sources whatever the Catch2 major version: v3 (catch_test_macros.hpp, Debian 13) or
// v2 (single header catch.hpp, Debian 12). The tests use only macros common to both (TEST_CASE, SECTION, REQUIRE,
// CHECK, INFO, CAPTURE, FAIL, WARN).
#pragma once

#if defined(FA_CATCH2_V3)
#include <catch2/catch_message.hpp>
#include <catch2/catch_test_macros.hpp>
#else
#include <catch2/catch.hpp>
#endif
