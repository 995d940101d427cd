// ThreadSanitizer's suppressions for the processes that link Debian's
// libgrpc, libabsl and (through gRPC) OpenSSL 3. Those libraries are not
// instrumented: TSan sees
// neither their locks nor their own loads and stores, only the libc calls
// they make (memcpy, memcmp, epoll_wait, ...), through its interceptors. So
// a buffer our code (or grpc++'s inline headers) fills before handing it
// to grpc under grpc's own mutex looks like a race once grpc's thread
// memcpy()s it (seen in controlplane_test: epoll descriptors, channel
// arguments, call metadata; abseil's deadlock detector). `called_from_lib`
// makes TSan ignore the interceptors those libraries call; every access
// made by our own code is still checked. The list is every uninstrumented
// library `ldd controlplane_test` shows (each name must match exactly one
// loaded library, hence the trailing ".so."). Last, races whose innermost
// frame is grpc++'s own inline code (see below). test/SANITIZERS.md has the
// runs.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libabsl_bad_optional_access.so.\n"
         "called_from_lib:libabsl_bad_variant_access.so.\n"
         "called_from_lib:libabsl_base.so.\n"
         "called_from_lib:libabsl_city.so.\n"
         "called_from_lib:libabsl_civil_time.so.\n"
         "called_from_lib:libabsl_cord.so.\n"
         "called_from_lib:libabsl_cord_internal.so.\n"
         "called_from_lib:libabsl_cordz_functions.so.\n"
         "called_from_lib:libabsl_cordz_handle.so.\n"
         "called_from_lib:libabsl_cordz_info.so.\n"
         "called_from_lib:libabsl_debugging_internal.so.\n"
         "called_from_lib:libabsl_demangle_internal.so.\n"
         "called_from_lib:libabsl_exponential_biased.so.\n"
         "called_from_lib:libabsl_graphcycles_internal.so.\n"
         "called_from_lib:libabsl_hash.so.\n"
         "called_from_lib:libabsl_int128.so.\n"
         "called_from_lib:libabsl_low_level_hash.so.\n"
         "called_from_lib:libabsl_malloc_internal.so.\n"
         "called_from_lib:libabsl_random_internal_platform.so.\n"
         "called_from_lib:libabsl_random_internal_pool_urbg.so.\n"
         "called_from_lib:libabsl_random_internal_randen.so.\n"
         "called_from_lib:libabsl_random_internal_randen_hwaes.so.\n"
         "called_from_lib:libabsl_random_internal_randen_hwaes_impl.so.\n"
         "called_from_lib:libabsl_random_internal_randen_slow.so.\n"
         "called_from_lib:libabsl_random_internal_seed_material.so.\n"
         "called_from_lib:libabsl_random_seed_gen_exception.so.\n"
         "called_from_lib:libabsl_raw_hash_set.so.\n"
         "called_from_lib:libabsl_raw_logging_internal.so.\n"
         "called_from_lib:libabsl_spinlock_wait.so.\n"
         "called_from_lib:libabsl_stacktrace.so.\n"
         "called_from_lib:libabsl_status.so.\n"
         "called_from_lib:libabsl_statusor.so.\n"
         "called_from_lib:libabsl_str_format_internal.so.\n"
         "called_from_lib:libabsl_strerror.so.\n"
         "called_from_lib:libabsl_strings.so.\n"
         "called_from_lib:libabsl_strings_internal.so.\n"
         "called_from_lib:libabsl_symbolize.so.\n"
         "called_from_lib:libabsl_synchronization.so.\n"
         "called_from_lib:libabsl_throw_delegate.so.\n"
         "called_from_lib:libabsl_time.so.\n"
         "called_from_lib:libabsl_time_zone.so.\n"
         "called_from_lib:libaddress_sorting.so.\n"
         "called_from_lib:libcares.so.\n"
         "called_from_lib:libcrypto.so.\n"
         "called_from_lib:libgpr.so.\n"
         "called_from_lib:libgrpc++.so.\n"
         "called_from_lib:libgrpc.so.\n"
         "called_from_lib:libprotobuf.so.\n"
         "called_from_lib:libre2.so.\n"
         "called_from_lib:libssl.so.\n"
         "called_from_lib:libupb.so.\n"
         // grpc++'s inline code, compiled into our objects but handing its
         // state over through libgrpc's completion queue: a race whose
         // innermost frame is in grpc++'s headers, or that happens inside
         // the two grpc++ headers that never call back into our code (an
         // interceptor's memset there has an interceptor as innermost frame).
         "race_top:/usr/include/grpcpp/\n"
         "race:grpcpp/impl/codegen/interceptor_common.h\n"
         "race:grpcpp/impl/call_op_set.h\n"
         // A stream's callback tags, set up by one grpc thread and run by
         // another: SetupReactor calls none of our code.
         "race:ServerCallbackReaderWriterImpl::SetupReactor\n";
}
#endif
#endif
