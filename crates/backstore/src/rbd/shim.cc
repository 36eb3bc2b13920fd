// rtarget's one use of librbd's C++ API (rbd/shim.rs says why): a write
// whose buffer librbd takes over instead of copying it. Built by build.rs
// into a shared object of its own, linked against librbd and librados.

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>

#include <rbd/librbd.hpp>

// librbd::Image is a handle around the C API's image (its one member,
// `ctx`, is what rbd_open gave as rbd_image_t) and has no virtual table,
// so a view of that pointer is an Image for its non-virtual methods. It is
// never destroyed (its destructor would close the image).
static_assert(sizeof(librbd::Image) == sizeof(rbd_image_t), "librbd::Image is one handle");
static_assert(!std::is_polymorphic<librbd::Image>::value, "librbd::Image has no vtable");

extern "C" int rtarget_rbd_aio_write_owned(rbd_image_t image, uint64_t off, size_t len,
                                           char *buf, rbd_completion_t c) noexcept {
    // From here `buf` is librbd's: free()d when its last reference goes,
    // whatever happens to the write (also when this call fails).
    try {
        ceph::bufferlist bl;
        bl.push_back(ceph::buffer::claim_malloc(static_cast<unsigned>(len), buf));
        alignas(librbd::Image) unsigned char view[sizeof(librbd::Image)];
        std::memcpy(view, &image, sizeof image);
        auto *img = std::launder(reinterpret_cast<librbd::Image *>(view));
        // rbd_aio_create_completion's handle is a librbd::RBD::AioCompletion.
        return img->aio_write(off, len, bl, static_cast<librbd::RBD::AioCompletion *>(c));
    } catch (const std::bad_alloc &) {
        return -ENOMEM;
    } catch (...) {
        return -EIO;
    }
}
